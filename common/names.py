"""Names a peer sends (model names) and how any peer-supplied text appears in messages and logs."""
import re

from qpart.common.errors import InvalidArgument

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHOWN_CHARACTERS = 64   # peer-supplied text echoed in an error message or a log line is cut to this


def shown(value, limit: int = SHOWN_CHARACTERS) -> str:
    """repr() of a peer-supplied value, cut to `limit` characters with the full length noted."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):      # `$` alone lets "name\n" through
        raise InvalidArgument(f"{what} {shown(name)} is not valid: 1-64 letters, digits, '_', '.', '-', "
                              "starting with a letter or digit")
    return name
