using System.Text.Json;
using System.Text.Json.Serialization;

namespace Analytics.Submission.Delivery;

/// <summary>
/// What the spool hands the queue, and what the listener asks it before taking a message. Registered by
/// <c>AddDelivery</c>; without it accepted mail stays in the spool and only a full disk refuses mail.
/// </summary>
public interface IMailQueue
{
    /// <summary>Whether a message of <paramref name="size"/> bytes (0: size unknown) fits the spool quota and free-space floor.</summary>
    bool HasRoomFor(long size);

    /// <summary>The message is durably in the spool (ID.eml + ID.json); called before the client gets 250.</summary>
    void Enqueued(SpoolEnvelope envelope);
}

internal enum RecipientStatus
{
    Pending,
    Delivered,
    Failed,
}

/// <summary>One recipient's fate so far. Mutated only under its message's lock.</summary>
internal sealed class RecipientState
{
    [JsonPropertyName("address")]
    public required string Address { get; init; }

    [JsonPropertyName("status")]
    [JsonConverter(typeof(JsonStringEnumConverter<RecipientStatus>))]
    public RecipientStatus Status { get; set; }

    [JsonPropertyName("attempts")]
    public int Attempts { get; set; }

    /// <summary>Last reply code from a next hop (0: none yet, or no hop reached).</summary>
    [JsonPropertyName("code")]
    public int Code { get; set; }

    /// <summary>Last RFC 3463 status, e.g. 2.0.0, 4.4.1, 5.1.1.</summary>
    [JsonPropertyName("dsn")]
    public string Dsn { get; set; } = "";

    /// <summary>Last reply text or error, as the operator and the DSN see it.</summary>
    [JsonPropertyName("reply")]
    public string Reply { get; set; } = "";

    [JsonPropertyName("hop")]
    public string Hop { get; set; } = "";

    [JsonPropertyName("at")]
    public DateTimeOffset? At { get; set; }

    /// <summary>A DSN for this failed recipient is in the queue.</summary>
    [JsonPropertyName("notified")]
    public bool Notified { get; set; }
}

/// <summary>
/// The queue's record of one message (<c>ID.state</c> beside ID.eml and ID.json), rewritten durably
/// after every attempt. Missing for a message that was never tried: every recipient pending.
/// </summary>
internal sealed class QueueState
{
    public static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    [JsonPropertyName("attempts")]
    public int Attempts { get; set; }

    [JsonPropertyName("next_attempt")]
    public DateTimeOffset NextAttempt { get; set; }

    [JsonPropertyName("held")]
    public bool Held { get; set; }

    [JsonPropertyName("last_error")]
    public string LastError { get; set; } = "";

    [JsonPropertyName("recipients")]
    public List<RecipientState> Recipients { get; set; } = [];

    public static QueueState Fresh(SpoolEnvelope envelope, DateTimeOffset now) => new()
    {
        NextAttempt = now,
        // The same address twice in one envelope is delivered once.
        Recipients = [.. envelope.Recipients.Distinct(StringComparer.OrdinalIgnoreCase).Select(r => new RecipientState { Address = r })],
    };

    public bool Done => Recipients.All(r => r.Status != RecipientStatus.Pending);
}
