"""Exceptions whose message is meant for the user, printed by the CLI without a traceback."""


class VireidError(Exception):
    """An expected mistake (bad path, bad config, bad data): the message is one clear sentence
    naming what is wrong and what to do."""


class DatasetError(VireidError):
    """A dataset on disk does not match the layout or protocol it claims to follow."""


class ConfigError(VireidError):
    """A configuration key or value is unknown or of the wrong type."""
