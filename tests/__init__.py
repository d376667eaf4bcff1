"""The test suite: ``test_*.py`` by area, shared fixtures in ``conftest.py`` and
:mod:`tests.fixtures`, and the probe processes the rate-limit tests start
(``ratelimit_probe.py``, ``chat_pacing_probe.py``). Not installed.
"""
