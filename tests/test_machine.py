"""The one-line machine and device descriptions written into run summaries and benchmarks, and
the host memory free for a job."""

import os

import torch

from blindsr.machine import available_memory, device_name, machine_description


def test_machine_description_names_the_cpu_count():
    text = machine_description()
    assert text.endswith(f"{os.cpu_count()} logical CPUs") and "\n" not in text


def test_device_name_gives_the_cpu_thread_count():
    n = torch.get_num_threads()
    assert device_name(torch.device("cpu")) == f"cpu ({n} thread{'s' * (n != 1)})"
    assert device_name(torch.device("meta")) == "meta"


def test_available_memory_reads_meminfo_and_a_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    2000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert available_memory(meminfo, cgroup) == 2_000_000 * 1024  # no cgroup files: meminfo
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory(meminfo, cgroup) == 2_000_000 * 1024
    (cgroup / "memory.max").write_text(f"{1 << 30}\n")
    (cgroup / "memory.current").write_text(f"{900 << 20}\n")
    (cgroup / "memory.stat").write_text(f"anon {600 << 20}\ninactive_file {200 << 20}\n")
    assert available_memory(meminfo, cgroup) == (1 << 30) - (900 << 20) + (200 << 20)
    assert available_memory(tmp_path / "none", cgroup) is None
    here = available_memory()
    assert here is None or 0 < here < 1 << 50
