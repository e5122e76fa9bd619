"""The error of the optvis package: bad render input, said in one line."""

from store.errors import MicroscopeError


class RenderError(MicroscopeError, ValueError):
    """Bad render input (unknown layer or parameterisation, unit out of range, steps <= 0, ...); one line."""
