"""The one error type the CLI reports as a single line."""


class DataPrepError(Exception):
    """A problem with the user's input or flags; the message is one line naming it."""
