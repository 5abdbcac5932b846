using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Analytics.Events;

/// <summary>
/// Encodes <see cref="SmtpEvent"/>s as ClickHouse RowBinary for the <c>events</c> table: the format
/// both backends insert natively, and the bytes the spool keeps, so a spooled batch replays exactly
/// as it would have been inserted.
/// </summary>
public static class EventRowEncoder
{
    public const string Table = "events";

    public const string Columns =
        "ts, node, role, session_id, kind, client_ip, client_port, user, mechanism, outcome, reply_code, status, sender, recipient, recipient_domain, size, duration_ms, detail";

    // Longest field we store; longer client-supplied text is cut (the listener also bounds lines).
    private const int MaxFieldBytes = 4096;

    public static void Write(IBufferWriter<byte> writer, SmtpEvent e)
    {
        var span = writer.GetSpan(64);
        BinaryPrimitives.WriteInt64LittleEndian(span, e.Timestamp.ToUnixTimeMilliseconds());
        writer.Advance(8);
        WriteString(writer, e.Node);
        WriteByte(writer, (byte)e.Role);
        span = writer.GetSpan(8);
        BinaryPrimitives.WriteUInt64LittleEndian(span, e.SessionId);
        writer.Advance(8);
        WriteByte(writer, (byte)e.Kind);
        WriteIPv6(writer, e.ClientIp);
        span = writer.GetSpan(2);
        BinaryPrimitives.WriteUInt16LittleEndian(span, e.ClientPort);
        writer.Advance(2);
        WriteString(writer, e.User);
        WriteString(writer, e.Mechanism);
        WriteByte(writer, (byte)e.Outcome);
        span = writer.GetSpan(2);
        BinaryPrimitives.WriteUInt16LittleEndian(span, e.ReplyCode);
        writer.Advance(2);
        WriteString(writer, e.Status);
        WriteString(writer, e.Sender);
        WriteString(writer, e.Recipient);
        WriteString(writer, e.RecipientDomain);
        span = writer.GetSpan(12);
        BinaryPrimitives.WriteUInt64LittleEndian(span, e.Size);
        BinaryPrimitives.WriteUInt32LittleEndian(span[8..], e.DurationMs);
        writer.Advance(12);
        WriteString(writer, e.Detail);
    }

    private static void WriteByte(IBufferWriter<byte> writer, byte value)
    {
        writer.GetSpan(1)[0] = value;
        writer.Advance(1);
    }

    private static void WriteIPv6(IBufferWriter<byte> writer, IPAddress address)
    {
        // ClickHouse IPv6 is 16 bytes in network order; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d).
        var span = writer.GetSpan(16)[..16];
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            span[..10].Clear();
            span[10] = 0xff;
            span[11] = 0xff;
            address.TryWriteBytes(span[12..], out _);
        }
        else if (!address.TryWriteBytes(span, out _))
        {
            span.Clear();
        }

        writer.Advance(16);
    }

    private static void WriteString(IBufferWriter<byte> writer, string value)
    {
        var max = Math.Min(Encoding.UTF8.GetMaxByteCount(value.Length), MaxFieldBytes);
        var span = writer.GetSpan(max + 5);
        var length = value.Length <= MaxFieldBytes / 3
            ? Encoding.UTF8.GetBytes(value, span[5..])
            : Truncated(value, span[5..(5 + MaxFieldBytes)]);

        // LEB128 length prefix, then the bytes moved down next to it.
        var prefix = 0;
        var v = (uint)length;
        Span<byte> leb = stackalloc byte[5];
        do
        {
            var b = (byte)(v & 0x7f);
            v >>= 7;
            leb[prefix++] = v != 0 ? (byte)(b | 0x80) : b;
        }
        while (v != 0);

        span.Slice(5, length).CopyTo(span[prefix..]);
        leb[..prefix].CopyTo(span);
        writer.Advance(prefix + length);
    }

    private static int Truncated(string value, Span<byte> destination)
    {
        var encoder = Encoding.UTF8.GetEncoder();
        encoder.Convert(value, destination, flush: true, out _, out var bytes, out _);
        return bytes;
    }
}
