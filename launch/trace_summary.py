"""Where the time of a profiled stretch went: a JAX profiler trace → the events with the most self time.

`jax.profiler.trace(dir, create_perfetto_trace=True)` writes the trace as Perfetto JSON: one complete
event per Python call, XLA operation, host-device transfer and, on a GPU, kernel, each on its process
(the host; each device) and thread. An event's self time is its duration less that of the events nested
in it on the same thread, so the self times of a thread add up to the time it spent in events: busy, or
waiting inside one (for the device in `block_until_ready`, for an XLA operation to complete).
"""

import collections
import glob
import gzip
import json
import os

# The profiler's own start and stop, which the trace records too.
PROFILER_EVENTS = ('$profiler.py', '$contextlib.py')


def load_trace(trace_dir):
    """The events of the newest Perfetto trace under `trace_dir` → (complete events, {pid: process name})."""
    paths = glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'), recursive=True)
    if not paths:
        raise FileNotFoundError(f'no *perfetto_trace.json.gz under {trace_dir}: trace with create_perfetto_trace=True')
    with gzip.open(max(paths, key=os.path.getmtime)) as f:
        trace = json.load(f)
    events = trace['traceEvents'] if isinstance(trace, dict) else trace
    processes = {e['pid']: e['args']['name'] for e in events if e.get('ph') == 'M' and e['name'] == 'process_name'}
    return [e for e in events if e.get('ph') == 'X'], processes


def self_times(events, processes):
    """{(process name, event name): [self µs, count]} of complete events, nesting followed per thread."""
    threads = collections.defaultdict(list)
    for event in events:
        threads[event['pid'], event['tid']].append(event)
    totals = collections.defaultdict(lambda: [0.0, 0])
    for (pid, _), thread_events in threads.items():
        process = processes.get(pid, str(pid))
        thread_events.sort(key=lambda e: (e['ts'], -e['dur']))  # a parent before the children it starts with
        open_events = []  # [end, key, self µs]: the events enclosing the current one, outermost first

        def close(entry):
            totals[entry[1]][0] += entry[2]
            totals[entry[1]][1] += 1

        for event in thread_events:
            while open_events and open_events[-1][0] <= event['ts']:
                close(open_events.pop())
            if open_events:
                open_events[-1][2] -= event['dur']
            open_events.append([event['ts'] + event['dur'], (process, event['name']), event['dur']])
        while open_events:
            close(open_events.pop())
    return {key: value for key, value in totals.items() if not key[1].startswith(PROFILER_EVENTS)}


def print_summary(trace_dir, steps, top=20, out=print, unit='step'):
    """Per process, its threads' time in events per `unit` (the trace holds `steps` of them; waits inside
    events count, so it can exceed the wall time); then the `top` events by self time per unit, as Markdown."""
    totals = self_times(*load_trace(trace_dir))
    busy = collections.Counter()
    for (process, _), (micros, _) in totals.items():
        busy[process] += micros
    out(f'| process (threads and streams summed) | ms in events per {unit}, waits included |')
    out('| --- | --- |')
    for process, micros in busy.most_common():
        out(f'| {process} | {micros / steps / 1e3:.3f} |')
    out('')
    out(f'| process | event | self ms per {unit} | calls per {unit} |')
    out('| --- | --- | --- | --- |')
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:top]
    for (process, name), (micros, count) in ranked:
        short = (name if len(name) <= 90 else name[:87] + '...').replace('|', '\\|')
        out(f'| {process} | `{short}` | {micros / steps / 1e3:.3f} | {count / steps:.2f} |')
