import pytest

from planner.core.errors import InputError
from planner.core.units import format_size, parse_bandwidth, parse_size


@pytest.mark.parametrize("text,expected", [
    (4096, 4096), ("4096", 4096), ("64KiB", 65536), ("1MiB", 1 << 20), ("1GiB", 1 << 30), ("2 GiB", 2 << 30),
    ("1KB", 1000), ("1.5MB", 1_500_000), ("0.5KiB", 512), ("3B", 3),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "1XB", "-4", 0, -1, 1.5, "0.3B", True, None, [1]])
def test_parse_size_rejects(bad):
    with pytest.raises(InputError) as err:
        parse_size(bad, source="f.yaml", field="size")
    assert "f.yaml" in str(err.value) and "size" in str(err.value)


@pytest.mark.parametrize("text,expected", [(25, 25.0), (12.5, 12.5), ("50GB/s", 50.0), ("400Gb/s", 50.0),
                                           ("200Gbps", 25.0), ("1TB/s", 1000.0), ("800 Mb/s", 0.1)])
def test_parse_bandwidth(text, expected):
    assert parse_bandwidth(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [0, -5, "50 furlongs", "fast", float("nan"), float("inf"), False])
def test_parse_bandwidth_rejects(bad):
    with pytest.raises(InputError):
        parse_bandwidth(bad)


def test_format_size_round_trips():
    for n in (1, 1000, 1024, 65536, 3 << 20, 1 << 30):
        assert parse_size(format_size(n)) == n
