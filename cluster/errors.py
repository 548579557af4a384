"""The errors a cluster node's start-up reports to ``s4-server``, in a module of their own so that the server can
name them without importing the cluster package (grpclib, aiohttp) when it runs a single node."""

from __future__ import annotations


class GrpcBindError(Exception):
    """The gRPC address cannot be bound; the message names S4_NODE_GRPC_ADDR."""


class RejoinRefused(Exception):
    """This node's data must not rejoin its pool: the message names the setting and the bootstrap command."""
