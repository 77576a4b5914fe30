"""Unit tests of policy.py, natively: python3 -m unittest -v"""

import unittest
from datetime import datetime, timezone
from pathlib import Path

from policy import Config, ConfigError, LastSync, decide


def at(text: str) -> int:
    """Epoch seconds of an ISO time in UTC, e.g. 2026-11-26T10:00."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


DEFAULT = Config()
BERLIN = 60  # UTC+1 in winter


class Decide(unittest.TestCase):
    def test_never_synced_is_now(self):
        d = decide(DEFAULT, at("2026-11-26T10:00"), 0, None, False)
        self.assertEqual(d.next_sync, at("2026-11-26T10:00"))
        self.assertGreater(d.cap_until, at("2026-11-26T10:00"))

    def test_business_hours_are_hourly_and_capped(self):
        # Thursday 10:30 in Berlin.
        last = LastSync(at("2026-11-26T09:10"), at("2026-11-26T09:12"), True)
        d = decide(DEFAULT, at("2026-11-26T09:30"), BERLIN, last, False)
        self.assertEqual(d.next_sync, at("2026-11-26T10:10"))
        self.assertEqual(d.cap_bps, 2_000_000)

    def test_outside_business_hours_every_15_minutes_uncapped(self):
        last = LastSync(at("2026-11-26T18:50"), at("2026-11-26T18:55"), True)
        d = decide(DEFAULT, at("2026-11-26T19:00"), BERLIN, last, False)
        self.assertEqual(d.next_sync, at("2026-11-26T19:05"))
        self.assertIsNone(d.cap_bps)

    def test_the_offset_decides_the_period(self):
        # 07:30 UTC is 08:30 in Berlin (business) but 07:30 in London (not).
        now = at("2026-11-26T07:30")
        self.assertEqual(decide(DEFAULT, now, BERLIN, None, False).cap_bps, 2_000_000)
        self.assertIsNone(decide(DEFAULT, now, 0, None, False).cap_bps)
        # Negative offsets too: 13:30 UTC is 08:30 in New York (UTC-5).
        self.assertEqual(decide(DEFAULT, at("2026-11-26T13:30"), -300, None, False).cap_bps, 2_000_000)

    def test_weekends_are_outside(self):
        # Saturday noon.
        self.assertIsNone(decide(DEFAULT, at("2026-11-28T12:00"), 0, None, False).cap_bps)

    def test_the_decision_ends_when_the_period_changes(self):
        # 07:55, next sync at 08:05, but business hours start at 08:00.
        last = LastSync(at("2026-11-26T07:50"), at("2026-11-26T07:51"), True)
        d = decide(DEFAULT, at("2026-11-26T07:55"), 0, last, False)
        self.assertEqual(d.cap_until, at("2026-11-26T08:00"))
        # Friday 17:30 in Berlin: the cap ends at 18:00 Berlin time.
        last = LastSync(at("2026-11-27T16:00"), at("2026-11-27T16:01"), True)
        d = decide(DEFAULT, at("2026-11-27T16:30"), BERLIN, last, False)
        self.assertEqual(d.cap_until, at("2026-11-27T17:00"))

    def test_urgent_is_now_at_the_periods_cap(self):
        last = LastSync(at("2026-11-26T09:59"), at("2026-11-26T10:00"), True)
        d = decide(DEFAULT, at("2026-11-26T10:00"), 0, last, True)
        self.assertEqual(d.next_sync, at("2026-11-26T10:00"))
        self.assertEqual(d.cap_bps, 2_000_000)

    def test_a_failed_sync_is_retried_soon(self):
        last = LastSync(at("2026-11-26T11:58"), at("2026-11-26T11:59"), False)
        d = decide(DEFAULT, at("2026-11-26T12:00"), 0, last, False)
        self.assertEqual(d.next_sync, at("2026-11-26T12:04"))

    def test_an_overdue_sync_is_now(self):
        last = LastSync(at("2026-11-26T01:00"), at("2026-11-26T01:01"), True)
        d = decide(DEFAULT, at("2026-11-26T12:00"), 0, last, False)
        self.assertEqual(d.next_sync, at("2026-11-26T12:00"))

    def test_cap_until_is_always_after_now(self):
        config = Config.parse('business-days = [1, 2, 3, 4, 5, 6, 7]\nbusiness-end = "24:00"')
        start = at("2026-11-23T00:00")
        for minute in range(0, 8 * 24 * 60, 7):
            now = start + minute * 60
            for last in (None, LastSync(now - 60, now - 30, True), LastSync(now - 60, now - 30, False)):
                for cfg in (DEFAULT, config):
                    d = decide(cfg, now, BERLIN, last, False)
                    self.assertGreater(d.cap_until, now)
                    self.assertGreaterEqual(d.next_sync, now)


class Configuration(unittest.TestCase):
    def test_plugin_toml_config_is_valid_and_the_default(self):
        with open(Path(__file__).with_name("plugin.toml"), encoding="utf-8") as f:
            # [config] is the manifest's last table: what the plugin sees
            # when the node sets nothing.
            config_text = f.read().split("\n[config]\n", 1)[1]
        self.assertEqual(Config.parse(config_text), DEFAULT)

    def test_settings_override_defaults(self):
        config = Config.parse('business-start = "09:30"\nbusiness-cap-bps = 0\nbusiness-days = [6, 1]')
        self.assertEqual(config.business_start, 9 * 60 + 30)
        self.assertEqual(config.business_cap_bps, 0)
        self.assertEqual(config.business_days, (1, 6))

    def test_bad_settings_name_the_key(self):
        for text, needle in [
            ('business-start = "8am"', "business-start"),
            ('business-start = "19:00"', "before business-end"),
            ("business-days = [0]", "business-days"),
            ("outside-every-minutes = 0", "outside-every-minutes"),
            ("business-cap-bps = -1", "business-cap-bps"),
            ("wekdays = [1]", "unknown key 'wekdays'"),
            ("not toml", "invalid plugin configuration"),
        ]:
            with self.subTest(text=text):
                with self.assertRaises(ConfigError) as caught:
                    Config.parse(text)
                self.assertIn(needle, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
