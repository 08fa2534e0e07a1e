"""The one error type a user sees: printed as a single ``error: ...`` line, never a traceback."""


class DeviceError(Exception):
    """A problem with the user's bundle, input or options; the message names what is wrong."""
