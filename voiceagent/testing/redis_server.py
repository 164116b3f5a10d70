"""Moved: the redis-server launcher is a test helper, now ``tests/support/redis_server.py`` (not shipped).

This re-export works from a checkout (the repository root on ``sys.path``: pytest, ``python -m bench``) so
older imports keep working; import ``tests.support.redis_server`` instead.
"""

from tests.support.redis_server import REDIS_SERVER, RedisServer, redis_server_path, running_redis_server

__all__ = ["REDIS_SERVER", "RedisServer", "redis_server_path", "running_redis_server"]
