using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Net;

namespace Analytics.Events;

/// <summary>
/// How a batch's journal (<see cref="EventSpool.Journal"/>) holds events: groups of whole events, one
/// group per write, each with a header (magic, event count, payload length, CRC-32 of the payload).
/// Events, not encoded blocks: recovery rebuilds the batch as one frame, one block per table, which is
/// the shape the batch itself was inserted in, so ClickHouse recognises a batch that did reach the store
/// by its token (several blocks under one token are deduplicated as other blocks). Reading stops at the
/// first torn or corrupt group.
/// </summary>
internal static class JournalCodec
{
    public const int HeaderSize = 16;

    private const uint Magic = 0x314A5645; // "EVJ1"

    [ThreadStatic]
    private static MemoryStream? t_payload;

    /// <summary>Appends <paramref name="events"/> to <paramref name="output"/> as one group.</summary>
    public static void Write(IBufferWriter<byte> output, IReadOnlyList<SmtpEvent> events)
    {
        var payload = t_payload ??= new MemoryStream(1 << 16);
        payload.SetLength(0);
        using (var writer = new BinaryWriter(payload, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            Span<byte> address = stackalloc byte[16];
            foreach (var e in events)
            {
                writer.Write(e.Timestamp.UtcTicks);
                writer.Write(e.Node);
                writer.Write((byte)e.Role);
                writer.Write(e.SessionId);
                writer.Write((byte)e.Kind);
                e.ClientIp.TryWriteBytes(address, out var length);
                writer.Write((byte)length);
                writer.Write(address[..length]);
                writer.Write(e.ClientPort);
                writer.Write(e.User);
                writer.Write(e.Mechanism);
                writer.Write((byte)e.Outcome);
                writer.Write(e.ReplyCode);
                writer.Write(e.Status);
                writer.Write(e.Sender);
                writer.Write(e.Recipient);
                writer.Write(e.RecipientDomain);
                writer.Write(e.Size);
                writer.Write(e.DurationMs);
                writer.Write(e.Detail);
                writer.Write(e.SecretTag);
            }
        }

        var body = payload.GetBuffer().AsSpan(0, (int)payload.Length);
        var header = output.GetSpan(HeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], events.Count);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], body.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], Crc32.HashToUInt32(body));
        output.Advance(HeaderSize);
        output.Write(body);
    }

    /// <summary>
    /// The events of the intact groups at the start of <paramref name="data"/>; <paramref name="validLength"/>
    /// says where the first torn or corrupt group begins (the end when there is none).
    /// </summary>
    public static List<SmtpEvent> Read(byte[] data, out int validLength)
    {
        var events = new List<SmtpEvent>();
        var at = 0;
        while (data.Length - at >= HeaderSize)
        {
            var header = data.AsSpan(at);
            var count = BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
            var length = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
            if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic || count < 0 || length < 0 || length > data.Length - at - HeaderSize
                || Crc32.HashToUInt32(data.AsSpan(at + HeaderSize, length)) != BinaryPrimitives.ReadUInt32LittleEndian(header[12..]))
            {
                break;
            }

            var group = new List<SmtpEvent>(count);
            try
            {
                using var reader = new BinaryReader(new MemoryStream(data, at + HeaderSize, length, writable: false), System.Text.Encoding.UTF8);
                for (var i = 0; i < count; i++)
                {
                    group.Add(ReadEvent(reader));
                }
            }
            catch (Exception ex) when (ex is EndOfStreamException or ArgumentException or FormatException)
            {
                break; // a checksum that matches a payload it does not describe: written by something else
            }

            events.AddRange(group);
            at += HeaderSize + length;
        }

        validLength = at;
        return events;
    }

    /// <summary>The event count a group header at the start of <paramref name="data"/> claims (0 when unreadable).</summary>
    public static int ClaimedCount(ReadOnlySpan<byte> data) =>
        data.Length >= HeaderSize && BinaryPrimitives.ReadUInt32LittleEndian(data) == Magic ? Math.Max(0, BinaryPrimitives.ReadInt32LittleEndian(data[4..])) : 0;

    private static SmtpEvent ReadEvent(BinaryReader reader) => new()
    {
        Timestamp = new DateTimeOffset(reader.ReadInt64(), TimeSpan.Zero),
        Node = reader.ReadString(),
        Role = (ListenerRole)reader.ReadByte(),
        SessionId = reader.ReadUInt64(),
        Kind = (EventKind)reader.ReadByte(),
        ClientIp = new IPAddress(reader.ReadBytes(reader.ReadByte())),
        ClientPort = reader.ReadUInt16(),
        User = reader.ReadString(),
        Mechanism = reader.ReadString(),
        Outcome = (EventOutcome)reader.ReadByte(),
        ReplyCode = reader.ReadUInt16(),
        Status = reader.ReadString(),
        Sender = reader.ReadString(),
        Recipient = reader.ReadString(),
        RecipientDomain = reader.ReadString(),
        Size = reader.ReadUInt64(),
        DurationMs = reader.ReadUInt32(),
        Detail = reader.ReadString(),
        SecretTag = reader.ReadUInt64(),
    };
}
