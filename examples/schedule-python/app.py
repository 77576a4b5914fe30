"""A Ferry sync schedule written in Python: the component's entry point.

componentize-py generates the `wit_world` package from ../../sdk/wit (world
`sync-schedule`) while it builds the component: `wit_world.exports.Schedule`
is the interface to implement, records are dataclasses, `result<T, string>`
is the return value or a raised `componentize_py_types.Err(message)`, and
the host's functions are plain functions in `wit_world.imports.host`.
The rules themselves live in policy.py, which runs without any of this.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.schedule import ScheduleDecision, ScheduleRequest, SyncOutcome
from wit_world.imports import host
from wit_world.imports.types import LogLevel

import policy


class Schedule(exports.Schedule):
    def decide(self, request: ScheduleRequest) -> ScheduleDecision:
        try:
            # Read at every call: the node may change the settings while it
            # runs, and the text is small.
            config = policy.Config.parse(host.config())
        except policy.ConfigError as e:
            # The node reports the error and lets its built-in schedule decide.
            raise Err(str(e))
        last = None
        if request.last_sync is not None:
            sync = request.last_sync
            last = policy.LastSync(
                started=sync.started,
                finished=sync.finished,
                succeeded=sync.outcome == SyncOutcome.SUCCEEDED,
            )
        decision = policy.decide(
            config,
            now=request.now,
            utc_offset_minutes=request.utc_offset_minutes,
            last=last,
            urgent=request.urgent,
        )
        host.log(LogLevel.DEBUG, decision.reason)
        return ScheduleDecision(
            next_sync=decision.next_sync,
            bandwidth_cap_bps=decision.cap_bps,
            cap_until=decision.cap_until,
        )
