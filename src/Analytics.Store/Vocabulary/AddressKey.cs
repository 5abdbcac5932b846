using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Analytics;

/// <summary>
/// Client addresses and networks as fixed-size keys, the one keying every limit book, counter and gate
/// uses: an address is its 128-bit IPv6 form (IPv4 mapped, so both families share one map), a network
/// is that form with the host bits cleared plus its prefix length, so <c>10.0.0.0/16</c> and
/// <c>10.0.0.0/24</c> are different keys. No allocation to build or compare.
/// </summary>
public readonly record struct AddressKey(UInt128 Bits, byte Prefix)
{
    /// <summary>The default networks a client is grouped in: IPv4 /24, IPv6 /64.</summary>
    public const int DefaultV4Prefix = 24;

    public const int DefaultV6Prefix = 64;

    private static readonly UInt128 V4MappedPrefix = (UInt128)0xffff << 32;

    public bool IsV4 => Prefix >= 96 && (Bits >> 32) == 0xffff;

    /// <summary>The address itself (a /128 key).</summary>
    public static AddressKey Of(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            address.TryWriteBytes(bytes[12..], out _);
            return new AddressKey(V4MappedPrefix | BinaryPrimitives.ReadUInt32BigEndian(bytes[12..]), 128);
        }

        address.TryWriteBytes(bytes, out _);
        return new AddressKey(BinaryPrimitives.ReadUInt128BigEndian(bytes), 128);
    }

    /// <summary>The network of this address at its family's default prefix (/24 or /64).</summary>
    public AddressKey Network() => Network(IsV4 ? DefaultV4Prefix : DefaultV6Prefix);

    /// <summary>The network of this address with <paramref name="prefix"/> bits (an IPv4 prefix for IPv4 addresses).</summary>
    public AddressKey Network(int prefix)
    {
        var bits = IsV4 ? prefix + 96 : prefix;
        bits = Math.Clamp(bits, 0, 128);
        var mask = bits == 0 ? UInt128.Zero : UInt128.MaxValue << (128 - bits);
        return new AddressKey(Bits & mask, (byte)bits);
    }

    public IPAddress ToAddress()
    {
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, Bits);
        return IsV4 || (Bits >> 32) == 0xffff ? new IPAddress(bytes[12..]) : new IPAddress(bytes);
    }

    /// <summary><c>127.1.2.3</c> for an address, <c>127.1.2.0/24</c> or <c>2001:db8::/64</c> for a network.</summary>
    public override string ToString() => Prefix == 128
        ? ToAddress().ToString()
        : ToAddress() + "/" + (IsV4 ? Prefix - 96 : Prefix).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The default network of <paramref name="address"/> as text: <c>a.b.c.0/24</c> or <c>x:x:x:x::/64</c>.</summary>
    public static string NetworkText(IPAddress address) => Of(address).Network().ToString();

    public static IPAddress Unmap(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    /// <summary>An address (a /32 or /128) or a CIDR network, host bits cleared.</summary>
    public static bool TryParseNetwork(string? text, out AddressKey network)
    {
        network = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        text = text.Trim();
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (!IPAddress.TryParse(slash < 0 ? text : text[..slash], out var address))
        {
            return false;
        }

        var key = Of(Unmap(address));
        var max = key.IsV4 ? 32 : 128;
        var prefix = max;
        if (slash >= 0 && (!int.TryParse(text.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out prefix) || prefix > max))
        {
            return false;
        }

        network = key.Network(prefix);
        return true;
    }

    /// <summary>Whether <paramref name="address"/> lies in this network.</summary>
    public bool Contains(AddressKey address) => address.Network(IsV4 ? Prefix - 96 : Prefix) == this && address.IsV4 == IsV4;
}
