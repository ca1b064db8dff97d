"""The one exception type a user can cause.

Anything raised as `MyLLMError` is a problem with the user's input (a path, a config key, a
file, a request). The CLI prints its message on one line and exits with status 2, without a
traceback. Its message names the thing that is wrong and the fix.
"""


class MyLLMError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


class ConfigError(MyLLMError):
    """A config value or shape that cannot work."""
