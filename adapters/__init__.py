"""Vendor integrations, shipped as ``voiceagent.adapters``. Core never imports these."""
