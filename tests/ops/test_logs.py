import json
import logging

from nurture.ops.logs import JsonFormatter


def test_json_log_lines_carry_message_level_and_extra_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "nurture.worker",
            "levelname": "WARNING",
            "levelno": 30,
            "msg": "job %s failed",
            "args": ("tick",),
            "worker_id": "w-1",
        }
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "job tick failed"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "nurture.worker"
    assert entry["worker_id"] == "w-1"
    assert "\n" not in line
