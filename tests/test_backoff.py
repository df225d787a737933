import random

from voxbridge import RestartPolicy
from voxbridge.runtime.backoff import JITTER, Backoff


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_delays_double_up_to_the_cap() -> None:
    b = Backoff(RestartPolicy(initial=1, factor=2, max=300), Fixed(0.0))
    assert [b.next_delay() for _ in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_jitter_only_shortens_by_up_to_ten_percent() -> None:
    b = Backoff(RestartPolicy(initial=10, factor=1, max=10), Fixed(0.999999))
    assert 10 * (1 - JITTER) <= b.next_delay() < 10


def test_a_healthy_run_resets_the_sequence() -> None:
    b = Backoff(RestartPolicy(initial=1, factor=2, max=300, reset_after=600), Fixed(0.0))
    for _ in range(5):
        b.next_delay()
    b.healthy_for(599)
    assert b.next_delay() == 32
    b.healthy_for(600)
    assert b.next_delay() == 1


def test_very_long_crash_loops_do_not_overflow() -> None:
    b = Backoff(RestartPolicy(initial=1, factor=10, max=300), Fixed(0.0))
    for _ in range(2000):
        assert b.next_delay() <= 300
