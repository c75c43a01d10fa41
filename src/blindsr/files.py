"""Running one job over many image files: bad files are reported and skipped, never fatal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from blindsr import io
from blindsr.errors import BlindSRError


@dataclass
class Report:
    """What a batch run did: outputs written, failures (one line each), input pixels and time."""

    verb: str = "processed"
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    megapixels: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line of totals, then one line per failure."""
        rate = self.megapixels / self.seconds if self.seconds else 0.0
        line = (f"{len(self.written)} image(s) {self.verb} in {self.seconds:.1f} s "
                f"({self.megapixels:.2f} input MP, {rate:.3f} MP/s)")
        if self.failures:
            line += f"; {len(self.failures)} failed:\n  " + "\n  ".join(self.failures)
        return line


# Extensions that make ``-o`` name a file rather than a folder: those written, and other image
# formats a user might ask for (refused with a clear error instead of becoming a folder name).
FILE_EXTENSIONS = (*io.READ_EXTENSIONS, ".heic", ".avif", ".jp2", ".jxl")
SAME_FORMAT = {".jpeg": ".jpg", ".tiff": ".tif"}


def output_path(src: Path, output: Path, single: bool, suffix: str = "", ext: str = "auto") -> Path:
    """Where the result of ``src`` goes.

    ``output`` itself for a single input when it has an image extension, else
    ``output/<stem><suffix>.<ext>``; ``ext='auto'`` keeps the input format where it can be
    written (else PNG).
    """
    if single and output.suffix.lower() in io.IMAGE_EXTENSIONS and not output.is_dir():
        return output
    if ext == "auto":
        extension = src.suffix.lower() if src.suffix.lower() in io.IMAGE_EXTENSIONS else ".png"
    else:
        extension = "." + ext.lstrip(".")
    return output / f"{src.stem}{suffix}{extension}"


def names_a_file(output: Path) -> bool:
    """Whether ``-o`` names an image file rather than a folder."""
    return output.suffix.lower() in FILE_EXTENSIONS and not output.is_dir()


def check_output(output: Path, single: bool) -> None:
    """A one-line error now, before any image is processed, if ``-o`` cannot be what the run
    writes: an unwritable format, one file for several inputs, or a place that cannot be
    created (a file where the output folder should be, a read-only or missing location)."""
    from blindsr.paths import prepare_output

    if not names_a_file(output):
        prepare_output(output, "-o folder", folder=True)
        return
    suffix = output.suffix.lower()
    if suffix not in io.IMAGE_EXTENSIONS:
        raise BlindSRError(f"-o {output}: cannot write {suffix} images "
                           f"(writable: {', '.join(io.IMAGE_EXTENSIONS)})")
    if not single:
        raise BlindSRError(f"-o {output} names one file but there are several inputs: "
                           "give a folder")
    prepare_output(output, "-o file")


def check_ext(output: Path, ext: str) -> None:
    """A one-line error if ``-o`` names a file of another format than the ``--ext`` asked for."""
    suffix, wanted = output.suffix.lower(), "." + ext.lstrip(".")
    if (ext != "auto" and names_a_file(output)
            and SAME_FORMAT.get(suffix, suffix) != SAME_FORMAT.get(wanted, wanted)):
        raise BlindSRError(f"-o {output} is a {suffix} file but --ext asks for {ext}")


def process_files(inputs: list[str], output: str | Path,
                  job: Callable[[io.ImageData, Callable[[int], None]], io.ImageData],
                  verb: str = "processed", suffix: str = "", ext: str = "auto",
                  max_pixels: int | None = None, quality: int = 95, progress: bool = True,
                  steps: Callable[[io.ImageData], int] | None = None,
                  in_place_hint: str = "use -o for another folder") -> Report:
    """Read each input image, run ``job`` on it and write the result under ``output``.

    An output that would replace an input is refused with ``in_place_hint`` (the calling
    command's own options).

    ``job(image, advance)`` may call ``advance(n)`` to move an inner progress bar of
    ``steps(image)`` units (tiles, for example).
    """
    from tqdm import tqdm

    if any(sep in suffix for sep in ("/", "\\", "\0")):
        raise BlindSRError(f"--suffix {suffix!r}: a suffix is added to file names and cannot hold "
                           "a path separator (use -o for another folder)")
    max_pixels = io.max_pixel_limit(max_pixels)  # a bad limit is one error, not one per file
    report = Report(verb=verb)
    paths, missing = io.expand_inputs(inputs)
    report.failures.extend(missing)
    for line in missing:
        tqdm.write(f"error: {line}", file=sys.stderr)
    output = Path(output)
    single = len(inputs) == 1 and len(paths) <= 1  # none: the missing input is the error
    check_output(output, single)
    start = time.perf_counter()
    sources = {p.resolve(): p for p in paths}
    written_by: dict[Path, Path] = {}  # output -> the input it was made from
    bar = tqdm(paths, desc="images", unit="img", disable=not progress or len(paths) < 2)
    for src in bar:
        dst = output_path(src, output, single, suffix, ext)
        try:
            if dst.resolve() in sources:
                raise BlindSRError(f"{src}: its output would overwrite the input "
                                   f"{sources[dst.resolve()]} ({in_place_hint})")
            if dst.resolve() in written_by:
                raise BlindSRError(f"{src}: its output {dst} was written from "
                                   f"{written_by[dst.resolve()]}; not overwritten (rename one, "
                                   "or run them into separate folders)")
            image = io.read_image(src, max_pixels=max_pixels)
            total = steps(image) if steps else None
            with tqdm(total=total, desc=src.name, unit="tile", leave=False,
                      disable=not progress or total is None) as inner:
                try:
                    result = job(image, inner.update)
                except BlindSRError as err:  # name the file the job failed on
                    if str(src) in str(err):
                        raise
                    raise BlindSRError(f"{src}: {err}") from None
            report.written.append(io.write_image(dst, result, quality=quality))
            written_by[dst.resolve()] = src
            report.megapixels += image.height * image.width / 1e6
        except BlindSRError as err:
            report.failures.append(str(err))
            tqdm.write(f"error: {err}", file=sys.stderr)
    report.seconds = time.perf_counter() - start
    return report
