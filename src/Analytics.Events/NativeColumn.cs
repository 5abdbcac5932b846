using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Analytics.Events;

/// <summary>
/// A growable column of a ClickHouse Native block, and the few helpers every block writer here needs.
/// Owned by one encoder; not thread-safe.
/// </summary>
internal sealed class NativeColumn
{
    // Longest field we store; longer client-supplied text is cut (the listener also bounds lines).
    internal const int MaxFieldBytes = 4096;

    public NativeColumn(int capacity) => Data = new byte[capacity];

    public byte[] Data;
    public int Length;

    public ReadOnlySpan<byte> Written => Data.AsSpan(0, Length);

    public Span<byte> Reserve(int bytes)
    {
        if (Length + bytes > Data.Length)
        {
            Array.Resize(ref Data, Math.Max(Data.Length * 2, Length + bytes));
        }

        return Data.AsSpan(Length);
    }

    public void Byte(byte v)
    {
        Reserve(1)[0] = v;
        Length++;
    }

    public void UInt16(ushort v)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(Reserve(2), v);
        Length += 2;
    }

    public void UInt32(uint v)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(Reserve(4), v);
        Length += 4;
    }

    public void UInt64(ulong v)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(Reserve(8), v);
        Length += 8;
    }

    public void Int64(long v)
    {
        BinaryPrimitives.WriteInt64LittleEndian(Reserve(8), v);
        Length += 8;
    }

    public void VarUInt(ulong v)
    {
        Length += WriteVarUInt(Reserve(10), v);
    }

    /// <summary>16 bytes in network order, as ClickHouse's IPv6 (see <see cref="IpText.ToUInt128"/>).</summary>
    public void IPv6(UInt128 address)
    {
        BinaryPrimitives.WriteUInt128BigEndian(Reserve(16), address);
        Length += 16;
    }

    public void IPv6(IPAddress address)
    {
        // 16 bytes in network order; IPv4 stored IPv4-mapped (::ffff:a.b.c.d).
        var span = Reserve(16)[..16];
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

        Length += 16;
    }

    public void String(string value)
    {
        if (value.Length == 0)
        {
            Reserve(1)[0] = 0;
            Length++;
            return;
        }

        var max = Math.Min(3 * value.Length, MaxFieldBytes);
        var span = Reserve(max + 5);

        // Nearly every field is short: a one-byte length, then the bytes straight after it.
        if (value.Length <= 42)
        {
            var n = Encoding.UTF8.GetBytes(value, span[1..]);
            if (n < 128)
            {
                span[0] = (byte)n;
                Length += n + 1;
                return;
            }
        }

        var body = span[5..];
        int length;
        if (3 * value.Length <= MaxFieldBytes)
        {
            length = Encoding.UTF8.GetBytes(value, body);
        }
        else
        {
            Encoding.UTF8.GetEncoder().Convert(value, body[..MaxFieldBytes], flush: true, out _, out length, out _);
        }

        Span<byte> prefix = stackalloc byte[5];
        var p = WriteVarUInt(prefix, (ulong)length);
        body[..length].CopyTo(span[p..]);
        prefix[..p].CopyTo(span);
        Length += p + length;
    }

    /// <summary>The text as the events table keeps it: cut to <see cref="MaxFieldBytes"/> of UTF-8.</summary>
    public static string Stored(string value)
    {
        if (3 * value.Length <= MaxFieldBytes || Encoding.UTF8.GetByteCount(value) <= MaxFieldBytes)
        {
            return value;
        }

        var bytes = new byte[MaxFieldBytes];
        Encoding.UTF8.GetEncoder().Convert(value, bytes, flush: true, out _, out var length, out _);
        return Encoding.UTF8.GetString(bytes, 0, length);
    }

    public static void WriteBlockHeader(IBufferWriter<byte> output, int columns, int rows)
    {
        var header = output.GetSpan(20);
        var p = WriteVarUInt(header, (ulong)columns);
        p += WriteVarUInt(header[p..], (ulong)rows);
        output.Advance(p);
    }

    /// <summary>One column of a block: its name, its type, then its data.</summary>
    public static void WriteColumn(IBufferWriter<byte> output, string name, string type, ReadOnlySpan<byte> data)
    {
        WriteAscii(output, name);
        WriteAscii(output, type);
        output.Write(data);
    }

    /// <summary>An Array column: the offsets column (cumulative end of each row's array), then the values.</summary>
    public static void WriteArrayColumn(IBufferWriter<byte> output, string name, string type, NativeColumn offsets, NativeColumn values)
    {
        WriteAscii(output, name);
        WriteAscii(output, type);
        output.Write(offsets.Written);
        output.Write(values.Written);
    }

    private static void WriteAscii(IBufferWriter<byte> output, string value)
    {
        var span = output.GetSpan(value.Length + 5);
        var p = WriteVarUInt(span, (ulong)value.Length);
        p += Encoding.ASCII.GetBytes(value, span[p..]);
        output.Advance(p);
    }

    internal static int WriteVarUInt(Span<byte> span, ulong value)
    {
        var p = 0;
        while (value >= 0x80)
        {
            span[p++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[p++] = (byte)value;
        return p;
    }
}
