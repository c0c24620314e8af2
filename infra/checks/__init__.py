"""Custom checkov checks; checkov loads a directory only when it has this file."""
