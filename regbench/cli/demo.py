"""IMPLEMENTATION PENDING."""


def add_commands(subparsers) -> None:
    """Add this area's sub-commands."""
