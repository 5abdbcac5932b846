using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;

namespace Analytics.Events;

/// <summary>
/// ClickHouse's <c>uniq</c> aggregate state (<c>AggregateFunction(uniq, T)</c>), built here so the sink
/// can insert finished states instead of arrays a view turns into states (what cost the engine most of
/// an aggregate insert). The state is a set of 32-bit hashes (UniquesHashSet): each value is hashed to
/// 64 bits as ClickHouse's <c>uniq</c> does (CityHash64 v1.0.2 of a string's bytes or of an IPv6's 16
/// bytes, the number itself for integers), then to 32 (the low half of <c>intHash64</c>); it keeps every distinct hash while
/// there are at most 65,536 of them, and past that only hashes divisible by 2^k for the least k that
/// fits (the order values arrive in does not change the set). Written as: the skip degree (a byte),
/// the count (VarUInt), the hashes (UInt32 little-endian, any order: the reader re-inserts them).
/// Equal hash sets give equal <c>uniqMerge</c> results, so the queries read what they always read.
/// </summary>
internal static class UniqState
{
    // UNIQUES_HASH_MAX_SIZE: above this many hashes the set is thinned.
    internal const int MaxSize = 1 << 16;

    /// <summary>The set's hash of a string (its UTF-8 bytes, as the events table stores it).</summary>
    public static uint OfString(string value)
    {
        if (value.Length == 0)
        {
            return OfBytes([]);
        }

        Span<byte> buffer = stackalloc byte[256];
        var max = Encoding.UTF8.GetMaxByteCount(value.Length);
        if (max <= buffer.Length)
        {
            var n = Encoding.UTF8.GetBytes(value, buffer);
            return OfBytes(buffer[..n]);
        }

        return OfBytes(Encoding.UTF8.GetBytes(value));
    }

    public static uint OfBytes(ReadOnlySpan<byte> value) => SetHash(CityHash64(value));

    /// <summary>The set's hash of an IPv6 column value (16 bytes in network order, as stored).</summary>
    public static uint OfIPv6(UInt128 address)
    {
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, address);
        return OfBytes(bytes);
    }

    public static uint OfUInt64(ulong value) => SetHash(value);

    /// <summary>
    /// Appends the state of the set whose distinct hashes are <paramref name="hashes"/> (modified: thinned
    /// in place when over <see cref="MaxSize"/>).
    /// </summary>
    public static void Write(NativeColumn output, Span<uint> hashes)
    {
        byte skip = 0;
        var count = hashes.Length;
        while (count > MaxSize)
        {
            skip++;
            var kept = 0;
            var mask = (1u << skip) - 1;
            for (var i = 0; i < count; i++)
            {
                if ((hashes[i] & mask) == 0)
                {
                    hashes[kept++] = hashes[i];
                }
            }

            count = kept;
        }

        output.Byte(skip);
        output.VarUInt((ulong)count);
        for (var i = 0; i < count; i++)
        {
            output.UInt32(hashes[i]);
        }
    }

    // UniquesHashSet<DefaultHash<UInt64>>: the low 32 bits of intHash64 (the MurmurHash3 finalizer).
    /// <summary>The state of a few distinct hashes (never thinned): one reservation, no copy.</summary>
    public static void WriteSmall(NativeColumn output, ReadOnlySpan<uint> hashes)
    {
        var span = output.Reserve(2 + 4 * hashes.Length);
        span[0] = 0;
        span[1] = (byte)hashes.Length; // fewer than 128: a one-byte VarUInt
        for (var i = 0; i < hashes.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(span[(2 + 4 * i)..], hashes[i]);
        }

        output.Length += 2 + 4 * hashes.Length;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint SetHash(ulong key)
    {
        key ^= key >> 33;
        key *= 0xff51afd7ed558ccdUL;
        key ^= key >> 33;
        key *= 0xc4ceb9fe1a85ec53UL;
        key ^= key >> 33;
        return (uint)key;
    }

    // CityHash64 as of CityHash 1.0.2 (the version ClickHouse keeps for uniq and cityHash64).
    private const ulong K0 = 0xc3a5c85c97cb3127UL;
    private const ulong K1 = 0xb492b66fbe98f273UL;
    private const ulong K2 = 0x9ae16a3b2f90404fUL;
    private const ulong K3 = 0xc949d7c7509e6557UL;

    private static ulong Fetch64(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt64LittleEndian(s[at..]);

    private static ulong Fetch32(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt32LittleEndian(s[at..]);

    private static ulong Rotate(ulong value, int shift) => shift == 0 ? value : (value >> shift) | (value << (64 - shift));

    private static ulong ShiftMix(ulong value) => value ^ (value >> 47);

    private static ulong HashLen16(ulong u, ulong v)
    {
        const ulong Mul = 0x9ddfea08eb382d69UL;
        var a = (u ^ v) * Mul;
        a ^= a >> 47;
        var b = (v ^ a) * Mul;
        b ^= b >> 47;
        return b * Mul;
    }

    private static ulong HashLen0To16(ReadOnlySpan<byte> s)
    {
        var len = s.Length;
        if (len > 8)
        {
            var a = Fetch64(s, 0);
            var b = Fetch64(s, len - 8);

            // RotateByAtLeast1: len is 9..16 here, never 0 or 64.
            var r = b + (ulong)len;
            return HashLen16(a, (r >> len) | (r << (64 - len))) ^ b;
        }

        if (len >= 4)
        {
            var a = Fetch32(s, 0);
            return HashLen16((ulong)len + (a << 3), Fetch32(s, len - 4));
        }

        if (len > 0)
        {
            uint a = s[0];
            uint b = s[len >> 1];
            uint c = s[len - 1];
            var y = a + (b << 8);
            var z = (uint)len + (c << 2);
            return ShiftMix((y * K2) ^ (z * K3)) * K2;
        }

        return K2;
    }

    private static ulong HashLen17To32(ReadOnlySpan<byte> s)
    {
        var len = s.Length;
        var a = Fetch64(s, 0) * K1;
        var b = Fetch64(s, 8);
        var c = Fetch64(s, len - 8) * K2;
        var d = Fetch64(s, len - 16) * K0;
        return HashLen16(Rotate(a - b, 43) + Rotate(c, 30) + d, a + Rotate(b ^ K3, 20) - c + (ulong)len);
    }

    private static (ulong First, ulong Second) WeakHashLen32WithSeeds(ulong w, ulong x, ulong y, ulong z, ulong a, ulong b)
    {
        a += w;
        b = Rotate(b + a + z, 21);
        var c = a;
        a += x;
        a += y;
        b += Rotate(a, 44);
        return (a + z, b + c);
    }

    private static (ulong First, ulong Second) WeakHashLen32WithSeeds(ReadOnlySpan<byte> s, int at, ulong a, ulong b) =>
        WeakHashLen32WithSeeds(Fetch64(s, at), Fetch64(s, at + 8), Fetch64(s, at + 16), Fetch64(s, at + 24), a, b);

    private static ulong HashLen33To64(ReadOnlySpan<byte> s)
    {
        var len = s.Length;
        var z = Fetch64(s, 24);
        var a = Fetch64(s, 0) + (((ulong)len + Fetch64(s, len - 16)) * K0);
        var b = Rotate(a + z, 52);
        var c = Rotate(a, 37);
        a += Fetch64(s, 8);
        c += Rotate(a, 7);
        a += Fetch64(s, 16);
        var vf = a + z;
        var vs = b + Rotate(a, 31) + c;
        a = Fetch64(s, 16) + Fetch64(s, len - 32);
        z = Fetch64(s, len - 8);
        b = Rotate(a + z, 52);
        c = Rotate(a, 37);
        a += Fetch64(s, len - 24);
        c += Rotate(a, 7);
        a += Fetch64(s, len - 16);
        var wf = a + z;
        var ws = b + Rotate(a, 31) + c;
        var r = ShiftMix(((vf + ws) * K2) + ((wf + vs) * K0));
        return ShiftMix((r * K0) + vs) * K2;
    }

    internal static ulong CityHash64(ReadOnlySpan<byte> s)
    {
        var len = s.Length;
        if (len <= 32)
        {
            return len <= 16 ? HashLen0To16(s) : HashLen17To32(s);
        }

        if (len <= 64)
        {
            return HashLen33To64(s);
        }

        // Over 64 bytes: the end first, then 64-byte chunks with 56 bytes of state.
        var x = Fetch64(s, 0);
        var y = Fetch64(s, len - 16) ^ K1;
        var z = Fetch64(s, len - 56) ^ K0;
        var v = WeakHashLen32WithSeeds(s, len - 64, (ulong)len, y);
        var w = WeakHashLen32WithSeeds(s, len - 32, (ulong)len * K1, K0);
        z += ShiftMix(v.Second) * K1;
        x = Rotate(z + x, 39) * K1;
        y = Rotate(y, 33) * K1;

        var remaining = (len - 1) & ~63;
        var at = 0;
        do
        {
            x = Rotate(x + y + v.First + Fetch64(s, at + 16), 37) * K1;
            y = Rotate(y + v.Second + Fetch64(s, at + 48), 42) * K1;
            x ^= w.Second;
            y ^= v.First;
            z = Rotate(z ^ w.First, 33);
            v = WeakHashLen32WithSeeds(s, at, v.Second * K1, x + w.First);
            w = WeakHashLen32WithSeeds(s, at + 32, z + w.Second, y);
            (z, x) = (x, z);
            at += 64;
            remaining -= 64;
        }
        while (remaining != 0);

        return HashLen16(HashLen16(v.First, w.First) + (ShiftMix(y) * K1) + z, HashLen16(v.Second, w.Second) + x);
    }
}
