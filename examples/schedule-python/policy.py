"""The schedule's rules, in plain Python: no WebAssembly bindings here, so
`python3 -m unittest` tests them natively (see test_policy.py).

During business hours (by default 08:00 to 18:00, Monday to Friday, in the
node's local time) the relay syncs at most every hour, capped so the office's
link stays usable. Outside them it syncs every 15 minutes, uncapped. A failed
or partial sync is retried after a few minutes instead. An urgent task (one
that needs content before its deadline) syncs now, at the cap of the hour.
"""

import tomllib
from dataclasses import dataclass
from typing import Optional

MINUTE = 60
DAY = 24 * 60 * MINUTE
# 1970-01-01, day 0 of the epoch, was a Thursday: ISO weekday 4.
EPOCH_WEEKDAY = 4


class ConfigError(ValueError):
    """The plugin's configuration is wrong; the message says where."""


@dataclass(frozen=True)
class Config:
    """The [config] table of plugin.toml, with the node's settings laid over."""

    # Business hours, local time, as minutes after midnight: [start, end).
    business_start: int = 8 * 60
    business_end: int = 18 * 60
    # ISO weekdays with business hours: 1 is Monday, 7 is Sunday.
    business_days: tuple = (1, 2, 3, 4, 5)
    # Minutes between the starts of two syncs, and the cap, by period.
    business_every_minutes: int = 60
    business_cap_bps: int = 2_000_000
    outside_every_minutes: int = 15
    # Minutes from the end of a failed or partial sync to the retry.
    retry_minutes: int = 5

    @staticmethod
    def parse(text: str) -> "Config":
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid plugin configuration: {e}") from e
        known = {
            "business-start": ("business_start", _clock),
            "business-end": ("business_end", _clock),
            "business-days": ("business_days", _weekdays),
            "business-every-minutes": ("business_every_minutes", _minutes),
            "business-cap-bps": ("business_cap_bps", _count),
            "outside-every-minutes": ("outside_every_minutes", _minutes),
            "retry-minutes": ("retry_minutes", _minutes),
        }
        values = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(
                    f"invalid plugin configuration: unknown key {key!r}; "
                    f"known: {', '.join(sorted(known))}"
                )
            field, check = known[key]
            try:
                values[field] = check(value)
            except ValueError as e:
                raise ConfigError(f"invalid plugin configuration: {key}: {e}") from e
        config = Config(**values)
        if config.business_start >= config.business_end:
            raise ConfigError(
                "invalid plugin configuration: business-start must be before business-end"
            )
        return config


def _clock(value) -> int:
    """'HH:MM' (24:00 allowed as the end of the day) as minutes after midnight."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} must be a time like \"08:00\"")
    hours, sep, minutes = value.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{value!r} must be a time like \"08:00\"")
    total = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or total > 24 * 60:
        raise ValueError(f"{value!r} is not a time of day")
    return total


def _weekdays(value) -> tuple:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in value
    ):
        raise ValueError(f"{value!r} must be a list of weekdays, 1 (Monday) to 7 (Sunday)")
    return tuple(sorted(set(value)))


def _count(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} must be a whole number, 0 or more")
    return value


def _minutes(value) -> int:
    # At most a week: the host refuses decisions more than a year ahead.
    if _count(value) < 1 or value > 7 * 24 * 60:
        raise ValueError(f"{value!r} must be 1 to 10080 minutes")
    return value


@dataclass(frozen=True)
class LastSync:
    started: int
    finished: int
    succeeded: bool


@dataclass(frozen=True)
class Decision:
    next_sync: int
    # None: unlimited.
    cap_bps: Optional[int]
    cap_until: int
    # One line on why, for the node's log.
    reason: str


def in_business_hours(config: Config, local: int) -> bool:
    """Whether the local time `local` (epoch seconds shifted by the UTC
    offset) falls in business hours."""
    day, second = divmod(local, DAY)
    weekday = (day + EPOCH_WEEKDAY - 1) % 7 + 1
    minute = second // MINUTE
    return weekday in config.business_days and (
        config.business_start <= minute < config.business_end
    )


def next_change(config: Config, local: int) -> Optional[int]:
    """The first local time after `local` at which business hours start or
    end; None if they never do (no business days)."""
    day = local // DAY
    # A week and a day covers every weekday; days sort the candidates.
    for d in range(day, day + 9):
        weekday = (d + EPOCH_WEEKDAY - 1) % 7 + 1
        if weekday not in config.business_days:
            continue
        for minute in (config.business_start, config.business_end):
            moment = d * DAY + minute * MINUTE
            if moment > local:
                return moment
    return None


def decide(
    config: Config,
    now: int,
    utc_offset_minutes: int,
    last: Optional[LastSync],
    urgent: bool,
) -> Decision:
    offset = utc_offset_minutes * MINUTE
    local = now + offset
    business = in_business_hours(config, local)
    if business:
        every, cap, period = config.business_every_minutes, config.business_cap_bps, "business hours"
    else:
        every, cap, period = config.outside_every_minutes, None, "outside business hours"

    if urgent:
        next_sync, why = now, "urgent: now"
    elif last is None:
        next_sync, why = now, "never synced: now"
    elif not last.succeeded:
        retry = min(config.retry_minutes, every)
        next_sync, why = last.finished + retry * MINUTE, f"retry {retry} min after the last sync"
    else:
        next_sync, why = last.started + every * MINUTE, f"every {every} min"
    next_sync = max(next_sync, now)

    # The decision holds until the period changes or the next sync is due,
    # whichever comes first; the node asks again then. At least a minute
    # ahead, so a sync due now does not make the node ask again at once.
    change = next_change(config, local)
    cap_until = max(next_sync, now + MINUTE)
    if change is not None:
        cap_until = min(cap_until, change - offset)
    cap_until = max(cap_until, now + 1)

    cap_text = "unlimited" if cap is None else f"cap {cap} bit/s"
    return Decision(next_sync, cap, cap_until, f"{period}, {why}, {cap_text}")
