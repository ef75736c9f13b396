"""Ctrl-C (SIGINT) and SIGTERM stop a run, and none is lost.

Python raises a signal's exception wherever the main thread is, and where that is a garbage-collection callback
(JAX runs one at each collection) or a `__del__`, Python prints "Exception ignored" and goes on: a run then
trained to its end. So each stop is also recorded, and the training loop calls `raise_if_stopped()` between its
chunks. Before the loop's handlers are in place (the seconds `import jax` takes), a stop is only recorded:
raised inside an import it printed a traceback, or crashed the process, instead of one line.
"""

import contextlib
import signal

_stops = []  # the signals received since record_stops() or stops_raised() began
_before_recording = {}  # the handlers record_stops() replaced


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster's scheduler, `kill`): stopped like Ctrl-C, keeping the last checkpoint."""


def how_it_stopped(stop):
    """('terminated', 143) for a SIGTERM, ('interrupted', 130) for a Ctrl-C: the word a command prints and its exit
    code (128 + the signal's number, as a shell reports it). Asked of the signals received too, not only of the
    exception: Ray's waits turn any KeyboardInterrupt raised in them into a plain one."""
    return ('terminated', 143) if isinstance(stop, Terminated) or signal.SIGTERM in _stops else ('interrupted', 130)


def _record(signum, frame):
    _stops.append(signum)


def _record_and_raise(signum, frame):
    _stops.append(signum)
    raise_if_stopped()


def raise_if_stopped():
    """Raises Terminated after a SIGTERM, KeyboardInterrupt after a SIGINT; nothing if none came."""
    if signal.SIGTERM in _stops:
        # The stop is under way: a second SIGTERM (`timeout` passes on the one its process group got) would cut
        # its cleanup short with a traceback (in a worker pool's lock, say). stops_raised() puts the handler back.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated
    if _stops:
        raise KeyboardInterrupt


def _stop_signals():
    # A SIGINT ignored from the start (a background job of a non-interactive shell) stays ignored, as Python does.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    return (signal.SIGTERM,) if ignored else (signal.SIGINT, signal.SIGTERM)


def record_stops():
    """For an entry point, before its slow imports: a stop is recorded, to be raised by stops_raised()."""
    for s in _stop_signals():
        _before_recording.setdefault(s, signal.signal(s, _record))


def stop_recording():
    """Puts back the handlers record_stops() replaced, for what runs after an entry point's main() (Ray's shutdown
    at exit): a stop there, only recorded, would have left SIGKILL as the one way to end a hung process."""
    for s, handler in _before_recording.items():
        signal.signal(s, handler)
    _before_recording.clear()


@contextlib.contextmanager
def stops_raised():
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM Terminated, at once (a stop recorded before
    the block is raised by the block's first raise_if_stopped()). The handlers of before are put back at its end."""
    previous = {s: signal.signal(s, _record_and_raise) for s in _stop_signals()}
    try:
        yield
    finally:
        _stops.clear()
        for s, handler in previous.items():
            signal.signal(s, handler)


def take_back_stop_signals():
    """Within stops_raised(), after a library set handlers of its own (ray.init: a SIGTERM printed Ray's stack
    dump and exited with code 1), puts the block's back."""
    for s in _stop_signals():
        signal.signal(s, _record_and_raise)
