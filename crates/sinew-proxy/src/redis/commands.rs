//! What the proxy does with each command, by name: where its keys are, whether it is
//! split across shards, answered here, or refused because a proxy in front of shards
//! cannot run it safely.

/// How a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One key, the first argument: routed by it.
    Single,
    /// Keys spread over shards: split per shard, the replies joined in order.
    Split(Join),
    /// Several keys that must all be on one shard (`RENAME a b`, `SINTER a b c`).
    SameShard(Keys),
    /// Answered by the proxy.
    Local(Local),
    /// Refused, with why.
    Refused(&'static str),
}

/// How the replies of a split command are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// `MGET`: each key's value, in the client's order.
    Values,
    /// `MSET`: `+OK` when every shard said so; the pairs are key, value.
    Pairs,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: the sum of the shards' counts.
    Sum,
}

/// Where a same-shard command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Every argument after the name.
    All,
    /// The first two arguments.
    Two,
    /// `EVAL script numkeys key...`: `numkeys` keys after the third argument.
    Counted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Hello,
    Select,
}

/// The metric class of a kind (an index into per-class handles).
pub fn class(kind: Kind) -> usize {
    match kind {
        Kind::Single | Kind::SameShard(_) => 0,
        Kind::Split(_) => 1,
        Kind::Local(_) => 2,
        Kind::Refused(_) => 3,
    }
}

/// The names of the metric classes, by index.
pub const CLASSES: [&str; 4] = ["single_key", "split", "local", "refused"];

/// The kind of command `name` (upper case ASCII).
pub fn kind(name: &[u8]) -> Kind {
    use Kind::*;
    match name {
        b"GET"
        | b"SET"
        | b"SETNX"
        | b"SETEX"
        | b"PSETEX"
        | b"GETSET"
        | b"GETDEL"
        | b"GETEX"
        | b"APPEND"
        | b"STRLEN"
        | b"INCR"
        | b"DECR"
        | b"INCRBY"
        | b"DECRBY"
        | b"INCRBYFLOAT"
        | b"GETRANGE"
        | b"SETRANGE"
        | b"SUBSTR"
        | b"GETBIT"
        | b"SETBIT"
        | b"BITCOUNT"
        | b"BITPOS"
        | b"BITFIELD"
        | b"BITFIELD_RO"
        | b"EXPIRE"
        | b"PEXPIRE"
        | b"EXPIREAT"
        | b"PEXPIREAT"
        | b"EXPIRETIME"
        | b"PEXPIRETIME"
        | b"TTL"
        | b"PTTL"
        | b"PERSIST"
        | b"TYPE"
        | b"DUMP"
        | b"RESTORE"
        | b"HSET"
        | b"HSETNX"
        | b"HGET"
        | b"HMSET"
        | b"HMGET"
        | b"HDEL"
        | b"HLEN"
        | b"HEXISTS"
        | b"HINCRBY"
        | b"HINCRBYFLOAT"
        | b"HKEYS"
        | b"HVALS"
        | b"HGETALL"
        | b"HSTRLEN"
        | b"HSCAN"
        | b"HRANDFIELD"
        | b"LPUSH"
        | b"RPUSH"
        | b"LPUSHX"
        | b"RPUSHX"
        | b"LPOP"
        | b"RPOP"
        | b"LLEN"
        | b"LINDEX"
        | b"LINSERT"
        | b"LRANGE"
        | b"LREM"
        | b"LSET"
        | b"LTRIM"
        | b"LPOS"
        | b"SADD"
        | b"SREM"
        | b"SCARD"
        | b"SISMEMBER"
        | b"SMISMEMBER"
        | b"SMEMBERS"
        | b"SPOP"
        | b"SRANDMEMBER"
        | b"SSCAN"
        | b"ZADD"
        | b"ZCARD"
        | b"ZCOUNT"
        | b"ZINCRBY"
        | b"ZLEXCOUNT"
        | b"ZRANGE"
        | b"ZRANGEBYLEX"
        | b"ZRANGEBYSCORE"
        | b"ZRANK"
        | b"ZREM"
        | b"ZREMRANGEBYLEX"
        | b"ZREMRANGEBYRANK"
        | b"ZREMRANGEBYSCORE"
        | b"ZREVRANGE"
        | b"ZREVRANGEBYLEX"
        | b"ZREVRANGEBYSCORE"
        | b"ZREVRANK"
        | b"ZSCORE"
        | b"ZMSCORE"
        | b"ZSCAN"
        | b"ZPOPMIN"
        | b"ZPOPMAX"
        | b"ZRANDMEMBER"
        | b"PFADD"
        | b"GEOADD"
        | b"GEODIST"
        | b"GEOHASH"
        | b"GEOPOS"
        | b"GEORADIUS_RO"
        | b"GEORADIUSBYMEMBER_RO"
        | b"GEOSEARCH"
        | b"XADD"
        | b"XLEN"
        | b"XRANGE"
        | b"XREVRANGE"
        | b"XTRIM"
        | b"XDEL"
        | b"XACK"
        | b"XPENDING"
        | b"XCLAIM"
        | b"XAUTOCLAIM" => Single,
        b"MGET" => Split(Join::Values),
        b"MSET" => Split(Join::Pairs),
        b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" => Split(Join::Sum),
        b"SINTER" | b"SUNION" | b"SDIFF" | b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE"
        | b"PFCOUNT" | b"PFMERGE" => SameShard(Keys::All),
        b"RENAME" | b"RENAMENX" | b"SMOVE" | b"RPOPLPUSH" | b"LMOVE" => SameShard(Keys::Two),
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            SameShard(Keys::Counted)
        }
        b"PING" => Local(self::Local::Ping),
        b"ECHO" => Local(self::Local::Echo),
        b"QUIT" => Local(self::Local::Quit),
        b"HELLO" => Local(self::Local::Hello),
        b"SELECT" => Local(self::Local::Select),
        b"MULTI" | b"EXEC" | b"DISCARD" | b"WATCH" | b"UNWATCH" => {
            Refused("transactions cannot span the shards behind a proxy")
        }
        b"BLPOP" | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE" | b"BLMPOP" | b"BZPOPMIN" | b"BZPOPMAX"
        | b"BZMPOP" | b"XREAD" | b"XREADGROUP" | b"WAIT" => {
            Refused("blocking commands would stall the shard connection other clients share")
        }
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE"
        | b"SUNSUBSCRIBE" | b"PUBLISH" | b"SPUBLISH" | b"MONITOR" => {
            Refused("pub/sub needs a connection of its own to the server")
        }
        b"KEYS" | b"SCAN" | b"RANDOMKEY" | b"DBSIZE" | b"FLUSHALL" | b"FLUSHDB" => {
            Refused("it reads or changes the whole keyspace, which is spread over shards")
        }
        b"CLIENT" | b"CONFIG" | b"AUTH" | b"SHUTDOWN" | b"DEBUG" | b"SAVE" | b"BGSAVE"
        | b"BGREWRITEAOF" | b"REPLICAOF" | b"SLAVEOF" | b"CLUSTER" | b"SCRIPT" | b"FUNCTION"
        | b"MIGRATE" | b"MOVE" | b"SWAPDB" | b"OBJECT" | b"SORT" | b"SORT_RO" | b"INFO"
        | b"COMMAND" | b"LATENCY" | b"MEMORY" | b"SLOWLOG" | b"ACL" | b"RESET" => {
            Refused("it is about one server's connection or state, not a key's")
        }
        _ => Refused("the proxy does not know where its keys are"),
    }
}

/// Upper-cases a command name into `buf`; None when it is too long to be a known one.
pub fn upper<'a>(name: &[u8], buf: &'a mut [u8; 24]) -> Option<&'a [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, c) in out.iter_mut().zip(name) {
        *o = c.to_ascii_uppercase();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_and_unknown_ones_are_refused() {
        let mut buf = [0; 24];
        assert_eq!(kind(upper(b"gEt", &mut buf).unwrap()), Kind::Single);
        assert_eq!(kind(b"MGET"), Kind::Split(Join::Values));
        assert_eq!(kind(b"DEL"), Kind::Split(Join::Sum));
        assert!(matches!(kind(b"MULTI"), Kind::Refused(why) if why.contains("transactions")));
        assert!(matches!(kind(b"NOSUCH"), Kind::Refused(_)));
        assert!(upper(&[b'a'; 25], &mut buf).is_none());
    }
}
