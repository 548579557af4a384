"""Multi-process serving: HTTP worker processes send commands to the node's one sequencer process.

``channel`` frames msgpack messages over a socketpair (``loop_channel``: the worker's end, run by its event
loop; ``pending``: the request bookkeeping both ends share); ``client`` is what a worker's Engine uses in place
of the local sequencer (and of the background workers); ``service`` answers them in the sequencer process.
See docs/architecture/processes.md.
"""

from .channel import Channel, ChannelClosedError
from .client import RemoteIam, RemoteSequencer, RemoteWorkers
from .loop_channel import LoopChannel
from .service import SequencerService

__all__ = ["Channel", "ChannelClosedError", "LoopChannel", "RemoteIam", "RemoteSequencer", "RemoteWorkers",
           "SequencerService"]
