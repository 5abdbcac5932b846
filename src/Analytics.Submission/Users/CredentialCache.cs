using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace Analytics.Submission;

/// <summary>
/// Credentials verified lately, like Dovecot's auth cache: a mail client that reconnects every minute
/// pays the password hash once per <c>ttl</c>, not every time. Entries are a keyed hash of name and
/// password (a per-process random key; the password is never kept) bound to the stored hash they were
/// verified against, so a password change invalidates them at once. Only successes are cached.
/// </summary>
internal sealed class CredentialCache
{
    private const int MaxEntries = 200_000;
    private readonly ConcurrentDictionary<UInt128, (string StoredHash, long Expires)> _entries = new();
    private readonly byte[] _key = RandomNumberGenerator.GetBytes(32);
    private readonly TimeSpan _ttl;
    private readonly TimeProvider _time;

    public CredentialCache(TimeSpan ttl, TimeProvider time)
    {
        _ttl = ttl;
        _time = time;
    }

    public bool Contains(string user, string password, string storedHash) =>
        _ttl > TimeSpan.Zero && _entries.TryGetValue(Key(user, password), out var entry)
        && string.Equals(entry.StoredHash, storedHash, StringComparison.Ordinal) && _time.GetTimestamp() < entry.Expires;

    public void Add(string user, string password, string storedHash)
    {
        if (_ttl <= TimeSpan.Zero)
        {
            return;
        }

        var now = _time.GetTimestamp();
        if (_entries.Count >= MaxEntries)
        {
            foreach (var (key, entry) in _entries)
            {
                if (entry.Expires <= now)
                {
                    _entries.TryRemove(key, out _);
                }
            }

            if (_entries.Count >= MaxEntries)
            {
                return;
            }
        }

        _entries[Key(user, password)] = (storedHash, now + (long)(_ttl.TotalSeconds * _time.TimestampFrequency));
    }

    private UInt128 Key(string user, string password)
    {
        Span<byte> hash = stackalloc byte[32];
        HMACSHA256.HashData(_key, Encoding.UTF8.GetBytes(user + "\0" + password), hash);
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(hash);
    }
}
