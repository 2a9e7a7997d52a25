"""bench/poison.py end to end, small: the embedded broker, the CLI daemon, the dead-letter topic, the verdict."""

from bench.poison import main


def test_the_poison_bench_passes_on_a_small_stream(capsys):
    assert main(["--good", "1500", "--copies", "1", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and "| 5 MB record | oversize | 1 | 1 | 1 |" in out
