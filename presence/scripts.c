/* scripts.c — the Lua scripts that keep each presence hash and set consistent inside Redis. */
#include "internal.h"

/*
 * Each script is one atomic step, so two nodes writing the same client's hash never interleave.
 * Keys that depend on stored values (another node's inbox, a dead node's sets) are built inside
 * the script from the prefix: this needs a single Redis (or one primary), not Redis Cluster.
 * Names below: P the prefix, N this node.
 */
const char *const rbp_script_src[RBP_S_COUNT] = {
    /* OPEN: KEYS presence hash, P clients:N. ARGV N, conn, state, since_ms, single (0/1), P,
     * client, mode (open|resync). With single, a session held by another live node gets a close
     * order in that node's inbox. A resync never overwrites another live node's session. */
    [RBP_S_OPEN] =
        "local old = redis.call('HMGET', KEYS[1], 'node', 'conn')\n"
        "local other = old[1] and old[1] ~= ARGV[1] and\n"
        "              redis.call('EXISTS', ARGV[6] .. 'node:' .. old[1]) == 1\n"
        "if ARGV[8] == 'resync' and other then return 0 end\n"
        "if ARGV[5] == '1' and other then\n"
        "  redis.call('XADD', ARGV[6] .. 'inbox:' .. old[1], 'MAXLEN', '~', '100000', '*',\n"
        "             'close', old[2], 'reason', 'replaced', 'client', ARGV[7])\n"
        "end\n"
        "redis.call('HSET', KEYS[1], 'node', ARGV[1], 'conn', ARGV[2], 'state', ARGV[3],\n"
        "           'since_ms', ARGV[4])\n"
        "redis.call('SADD', KEYS[2], ARGV[7])\n"
        "return 1\n",

    /* STATE: KEYS presence hash. ARGV N, conn, state, since_ms: only if it names this session. */
    [RBP_S_STATE] = "local cur = redis.call('HMGET', KEYS[1], 'node', 'conn')\n"
                    "if cur[1] == ARGV[1] and cur[2] == ARGV[2] then\n"
                    "  redis.call('HSET', KEYS[1], 'state', ARGV[3], 'since_ms', ARGV[4])\n"
                    "  return 1\n"
                    "end\n"
                    "return 0\n",

    /* CLOSE: KEYS presence hash, P clients:N. ARGV N, conn, client[, conn2, state2, since2]: the
     * hash goes only if it still names this session; another session of the client on this node
     * (conn2) takes it over; the client leaves the node's set when it has none here. */
    [RBP_S_CLOSE] =
        "local cur = redis.call('HMGET', KEYS[1], 'node', 'conn')\n"
        "local mine = cur[1] == ARGV[1] and cur[2] == ARGV[2]\n"
        "if ARGV[4] then\n"
        "  if mine then redis.call('HSET', KEYS[1], 'conn', ARGV[4], 'state', ARGV[5],\n"
        "                          'since_ms', ARGV[6]) end\n"
        "  return 2\n"
        "end\n"
        "if mine then redis.call('DEL', KEYS[1]) end\n"
        "redis.call('SREM', KEYS[2], ARGV[3])\n"
        "return 1\n",

    /* BEGIN (of a resync): KEYS P clients:N, P clients-stale:N. The clients the node had go to
     * the stale set; the resync puts back those it holds; SWEEP then removes the rest. */
    [RBP_S_BEGIN] = "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
                    "  if redis.call('EXISTS', KEYS[2]) == 1 then\n"
                    "    redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])\n"
                    "    redis.call('DEL', KEYS[1])\n"
                    "  else\n"
                    "    redis.call('RENAME', KEYS[1], KEYS[2])\n"
                    "  end\n"
                    "end\n"
                    "return redis.call('SCARD', KEYS[2])\n",

    /* SWEEP: KEYS P clients-stale:N, P clients:N. ARGV N, P, count. Removes up to count stale
     * clients; the hash of each that this node no longer holds goes if it still names the node.
     * Returns how many stale clients are left. */
    [RBP_S_SWEEP] =
        "local m = redis.call('SPOP', KEYS[1], ARGV[3])\n"
        "for _, c in ipairs(m) do\n"
        "  if redis.call('SISMEMBER', KEYS[2], c) == 0 then\n"
        "    local k = ARGV[2] .. 'presence:' .. c\n"
        "    if redis.call('HGET', k, 'node') == ARGV[1] then redis.call('DEL', k) end\n"
        "  end\n"
        "end\n"
        "return redis.call('SCARD', KEYS[1])\n",

    /* GC: KEYS P nodes. ARGV P, N, count. For every other node whose key has expired (it died
     * without a word), removes up to count of its clients' hashes that still name it; a node with
     * nothing left leaves the registry and its inbox goes. Returns the dead clients left. */
    [RBP_S_GC] = "local left = 0\n"
                 "for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
                 "  if n ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'node:' .. n) == 0 then\n"
                 "    for _, s in ipairs({ARGV[1] .. 'clients:' .. n, ARGV[1] .. 'clients-stale:' "
                 ".. n}) do\n"
                 "      for _, c in ipairs(redis.call('SPOP', s, ARGV[3])) do\n"
                 "        local k = ARGV[1] .. 'presence:' .. c\n"
                 "        if redis.call('HGET', k, 'node') == n then redis.call('DEL', k) end\n"
                 "      end\n"
                 "      left = left + redis.call('SCARD', s)\n"
                 "    end\n"
                 "    if redis.call('EXISTS', ARGV[1] .. 'clients:' .. n, ARGV[1] .. "
                 "'clients-stale:' .. n)\n"
                 "       == 0 then\n"
                 "      redis.call('SREM', KEYS[1], n)\n"
                 "      redis.call('DEL', ARGV[1] .. 'inbox:' .. n)\n"
                 "    end\n"
                 "  end\n"
                 "end\n"
                 "return left\n",
};
