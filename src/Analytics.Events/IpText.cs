using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Analytics.Events;

/// <summary>
/// Client addresses as ClickHouse writes them, so that aggregates computed here name entities exactly
/// as the SQL path did: <c>IPv6NumToString</c> (RFC 5952: lower-case hex, the longest run of two or
/// more zero groups as <c>::</c>, the first when tied; the last 32 bits dotted for IPv4-mapped and
/// IPv4-compatible addresses) and <c>cutIPv6(ip, 8, 1)</c> (the last byte of an IPv4-mapped address,
/// the last 8 of any other). Addresses are held as one 128-bit number in network order.
/// </summary>
internal static class IpText
{
    private static readonly UInt128 MappedPrefix = (UInt128)0xffff << 32;
    private static readonly UInt128 MappedMask = ~(UInt128)uint.MaxValue;

    public static UInt128 ToUInt128(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            bytes[..10].Clear();
            bytes[10] = 0xff;
            bytes[11] = 0xff;
            address.TryWriteBytes(bytes[12..], out _);
        }
        else if (!address.TryWriteBytes(bytes, out _))
        {
            return 0;
        }

        return BinaryPrimitives.ReadUInt128BigEndian(bytes);
    }

    public static bool IsIPv4Mapped(UInt128 address) => (address & MappedMask) == MappedPrefix;

    /// <summary><c>cutIPv6(ip, 8, 1)</c>, as a number.</summary>
    public static UInt128 Network(UInt128 address) =>
        IsIPv4Mapped(address) ? address & ~(UInt128)0xff : address & ~(UInt128)ulong.MaxValue;

    /// <summary><c>IPv6NumToString</c>.</summary>
    public static string Format(UInt128 address)
    {
        // Nearly every client is IPv4 (mapped): what the general path below makes of one, made directly.
        if (IsIPv4Mapped(address))
        {
            return "::ffff:" + Dotted((uint)address);
        }

        Span<ushort> words = stackalloc ushort[8];
        for (var i = 0; i < 8; i++)
        {
            words[i] = (ushort)(address >> (112 - 16 * i));
        }

        // The longest run of zero words (two or more), the first one when tied.
        int bestBase = -1, bestLength = 0, currentBase = -1, currentLength = 0;
        for (var i = 0; i < 8; i++)
        {
            if (words[i] == 0)
            {
                if (currentBase == -1)
                {
                    currentBase = i;
                    currentLength = 1;
                }
                else
                {
                    currentLength++;
                }

                if (currentLength > bestLength)
                {
                    bestBase = currentBase;
                    bestLength = currentLength;
                }
            }
            else
            {
                currentBase = -1;
                currentLength = 0;
            }
        }

        if (bestLength < 2)
        {
            bestBase = -1;
        }

        var text = new StringBuilder(41);
        for (var i = 0; i < 8; i++)
        {
            if (bestBase != -1 && i >= bestBase && i < bestBase + bestLength)
            {
                if (i == bestBase)
                {
                    text.Append(':');
                }

                continue;
            }

            if (i != 0)
            {
                text.Append(':');
            }

            // IPv4-compatible (::a.b.c.d) or IPv4-mapped (::ffff:a.b.c.d): the last 32 bits dotted.
            if (i == 6 && bestBase == 0 && (bestLength == 6 || (bestLength == 5 && words[5] == 0xffff)))
            {
                var v4 = (uint)address;
                text.Append(CultureInfo.InvariantCulture, $"{v4 >> 24}.{(v4 >> 16) & 0xff}.{(v4 >> 8) & 0xff}.{v4 & 0xff}");
                return text.ToString();
            }

            text.Append(words[i].ToString("x", CultureInfo.InvariantCulture));
        }

        if (bestBase != -1 && bestBase + bestLength == 8)
        {
            text.Append(':');
        }

        return text.ToString();
    }

    /// <summary>The last 32 bits as a.b.c.d.</summary>
    public static string Dotted(uint v4) =>
        string.Create(CultureInfo.InvariantCulture, $"{v4 >> 24}.{(v4 >> 16) & 0xff}.{(v4 >> 8) & 0xff}.{v4 & 0xff}");

    /// <summary><c>replaceOne(text, '::ffff:', '')</c>.</summary>
    public static string WithoutMappedPrefix(string text)
    {
        var at = text.IndexOf("::ffff:", StringComparison.Ordinal);
        return at < 0 ? text : string.Concat(text.AsSpan(0, at), text.AsSpan(at + 7));
    }
}
