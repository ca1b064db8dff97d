"""The one exception type a user can cause.

Anything raised as `MyLLMError` is a problem with the user's input (a path, a config key, a
file, a request). The CLI prints its message on one line and exits with status 2, without a
traceback. Its message names the thing that is wrong and the fix.
"""


class MyLLMError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


class ConfigError(MyLLMError):
    """A config value or shape that cannot work."""


def brief(e: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, at most `limit` characters (its type if it has no text), for quoting
    inside a message: library errors often span lines (a traceback of a rank, a parser's context)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
