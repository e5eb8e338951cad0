"""Errors the user can act on, raised before any training starts."""


class ConfigError(ValueError):
    """A bad configuration value. The message is one line: `<key>: <rule> (got <value>)`."""

    def __init__(self, key: str, rule: str, value: object = None) -> None:
        self.key = key
        got = "" if value is None else f" (got {value!r})"
        super().__init__(f"{key}: {rule}{got}")


def is_int(value: object) -> bool:
    """An int that is not a bool (YAML `true` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(condition: bool, key: str, rule: str, value: object = None) -> None:
    if not condition:
        raise ConfigError(key, rule, value)
