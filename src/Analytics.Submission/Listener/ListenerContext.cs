using Analytics.Events;
using Microsoft.Extensions.Logging;

namespace Analytics.Submission.Listener;

/// <summary>Everything a session needs, shared by all sessions of one listener. Read-only.</summary>
internal sealed class ListenerContext
{
    public required SubmissionOptions Options { get; init; }

    public required TimeProvider Time { get; init; }

    public required IEventPublisher Events { get; init; }

    public required ILimitBook Limits { get; init; }

    public required UserDirectory Users { get; init; }

    public required RecipientDirectory Recipients { get; init; }

    public required MailSpool Spool { get; init; }

    public required ILogger Logger { get; init; }

    public required ConnectionGate Gate { get; init; }

    /// <summary>The delivery queue, when one is registered: it says whether the spool has room, and takes each accepted message.</summary>
    public Delivery.IMailQueue? Queue { get; init; }

    // Key of the password tags: random per process, so a tag means nothing outside this listener's memory.
    private readonly byte[] _tagKey = System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);

    /// <summary>A keyed hash of an AUTH password for the spraying defense (<see cref="LimitSubject.SecretTag"/>); never stored.</summary>
    public ulong TagOf(string password)
    {
        Span<byte> hash = stackalloc byte[32];
        System.Security.Cryptography.HMACSHA256.HashData(_tagKey, System.Text.Encoding.UTF8.GetBytes(password), hash);
        return Math.Max(1UL, System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(hash));
    }

    /// <summary>Set once shutdown begins: sessions between transactions are closed with 421 4.3.2.</summary>
    public volatile bool Draining;
}
