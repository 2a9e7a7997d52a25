"""The demo's accuracy-over-time summary: stretches of about equal size, no noisy stub at the end."""

from stream.cli.demo import AccuracyTimeline


def test_stretches_cover_the_stream_and_a_short_tail_joins_the_last_one():
    timeline = AccuracyTimeline()
    timeline.points = [
        (0, 0, 0),
        (4000, 2800, 4000),
        (12000, 8600, 12000),
        (29000, 24000, 29000),
        (29970, 24900, 29970),
    ]
    assert timeline.segments(4) == [(12000, 8600 / 12000), (29970, (24900 - 8600) / (29970 - 12000))]


def test_no_events_no_stretches():
    assert AccuracyTimeline().segments() == []
