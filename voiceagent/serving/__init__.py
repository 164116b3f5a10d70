"""``voiceagent serve``: worker processes behind a small supervisor, health, metrics and JSON logs."""
