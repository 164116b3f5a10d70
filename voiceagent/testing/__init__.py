"""Test kit: real loopback servers that speak each vendor's protocol, recording sinks, replay."""
