"""User-facing errors: a mistake the user can fix (bad file, typo in a config, joint id out of range).

The CLI catches `UserError`, prints its message as one paragraph and exits with status 2; anything else is a bug in
fastpose and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input. The message says what, where (file, entry) and how to fix it."""
