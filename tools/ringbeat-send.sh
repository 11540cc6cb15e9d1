#!/bin/sh
# ringbeat-send.sh — sends a message to a client id through Redis, with redis-cli only.
#
#   tools/ringbeat-send.sh CLIENT_ID MESSAGE [redis-cli options, e.g. -h HOST -p PORT]
#
# Finds the node that holds the client in its presence hash, checks that the node is alive (its
# key has not expired), and adds the message to that node's inbox stream, which the node delivers
# as a DATA frame to the client's connection(s). Prints the node and the entry id; exit 1 when the
# client is offline. Key prefix: $RINGBEAT_PREFIX (default ringbeat:). A password goes in
# $REDISCLI_AUTH (redis-cli reads it), never on the command line.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 CLIENT_ID MESSAGE [redis-cli options]" >&2; exit 2; }
client=$1
message=$2
shift 2
prefix=${RINGBEAT_PREFIX:-ringbeat:}
node=$(redis-cli "$@" --raw HGET "${prefix}presence:${client}" node)
if [ -z "$node" ]; then
  echo "offline: no presence for $client" >&2
  exit 1
fi
if [ "$(redis-cli "$@" --raw EXISTS "${prefix}node:${node}")" != 1 ]; then
  echo "offline: $client was on node $node, whose key has expired" >&2
  exit 1
fi
# Bounded like every stream of a long-lived system: a node that stopped reading keeps at most
# about this many entries.
id=$(redis-cli "$@" --raw XADD "${prefix}inbox:${node}" MAXLEN '~' 100000 '*' \
  client "$client" data "$message")
echo "$node $id"
