"""Multi-process serving: HTTP worker processes send commands to the node's one sequencer process.

``wire`` frames msgpack messages over a socketpair; both ends are driven by their process's event loop:
``loop_channel`` is the worker's end (``pending``: its request bookkeeping), ``service`` the sequencer process's
(one ``WorkerLink`` per worker; commands from all of them are committed together on that loop). ``client`` is
a worker's commit path (``ChannelCommitPath``, engine/ports.py): what its Engine uses in place of the local
sequencer (and of the background jobs, the login throttle and the cluster status).
See docs/architecture/processes.md.
"""

from .client import (
    ChannelCommitPath,
    RemoteBlobPush,
    RemoteBlobRepair,
    RemoteCluster,
    RemoteIam,
    RemoteIamFeed,
    RemoteJobs,
    RemoteKeyReads,
    RemoteNames,
    RemoteSequencer,
)
from .loop_channel import LoopChannel
from .pending import ChannelClosedError
from .service import SequencerService, WorkerLink

__all__ = ["ChannelClosedError", "ChannelCommitPath", "LoopChannel", "RemoteBlobPush", "RemoteBlobRepair",
           "RemoteCluster", "RemoteIam", "RemoteJobs",
           "RemoteKeyReads", "RemoteNames", "RemoteSequencer", "SequencerService", "WorkerLink", "RemoteIamFeed"]
