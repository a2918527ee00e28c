"""The one error type fd_export raises for bad input (a missing file, a config fd cannot export, a
bad flag value): library code raises it, scripts turn it into a message and exit code 2
(`fd_export.cli.run`)."""


class ExportError(Exception):
    """Bad input to an exporter or helper; the message names the file, field or flag."""
