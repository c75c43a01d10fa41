"""blindsr.train_run: the run's user messages."""

from blindsr.train_run import say


class Bar:
    def __init__(self):
        self.lines = []

    def write(self, message, file=None):
        self.lines.append(message)


class Holder:
    def __init__(self, bar):
        self.bar = bar


def test_say_writes_above_the_bar_and_only_from_the_main_process(capsys):
    bar = Bar()
    say(Holder(bar), "above the bar")
    say(Holder(bar), "from another rank", main=False)
    say(None, "no run yet")
    assert bar.lines == ["above the bar"]
    assert capsys.readouterr().err == "no run yet\n"
