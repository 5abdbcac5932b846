using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Text;
using Analytics.Store;

namespace Analytics.Simulation;

/// <summary>
/// What a simulated entity does (its behaviour model); labels record the <see cref="ThreatClass"/> it
/// amounts to, and the behaviour where the class alone would lose it (as the variant).
/// </summary>
internal static class Behaviour
{
    public const string Benign = "benign";
    public const string HeavySender = "heavy_sender";
    public const string Harvester = "harvester";
    public const string BruteForce = "brute_force";
    public const string Spraying = "spraying";
    public const string Stuffing = "stuffing";
    public const string Compromised = "compromised";
}

/// <summary>
/// What a simulated entity (a user or a client IP) really is. Malicious activity runs from
/// <see cref="MaliciousFrom"/> to <see cref="MaliciousTo"/> (null for benign entities; a compromised
/// account is benign before its takeover).
/// </summary>
public sealed record EntityLabel(
    EntityKind Kind,
    string Entity,
    ThreatClass Class,
    string Campaign,
    string Variant,
    DateTimeOffset? MaliciousFrom,
    DateTimeOffset? MaliciousTo);

/// <summary>Writes labels to the <c>labels</c> table (migration 0004) as RowBinary.</summary>
public static class LabelWriter
{
    public const string Table = "labels";
    public const string Columns = "entity_kind, entity, ip, class, campaign, variant, malicious_from, malicious_to, source, run_id, created_at";
    public const string Source = "simulation";

    public static async Task WriteAsync(IClickHouseStore store, IReadOnlyList<EntityLabel> labels, string runId, DateTimeOffset createdAt, CancellationToken cancellationToken)
    {
        const int batch = 50_000;
        for (var offset = 0; offset < labels.Count; offset += batch)
        {
            var writer = new ArrayBufferWriter<byte>(64 * Math.Min(batch, labels.Count - offset));
            foreach (var label in labels.Skip(offset).Take(batch))
            {
                Row(writer, label, runId, createdAt);
            }

            await store.InsertRowBinaryAsync(Table, Columns, writer.WrittenMemory, null, cancellationToken);
        }
    }

    private static void Row(ArrayBufferWriter<byte> w, EntityLabel label, string runId, DateTimeOffset createdAt)
    {
        Byte(w, (byte)label.Kind);
        String(w, label.Entity);
        var ip = w.GetSpan(16)[..16];
        ip.Clear();
        if (label.Kind == EntityKind.Ip && IPAddress.TryParse(label.Entity, out var address))
        {
            address.MapToIPv6().TryWriteBytes(ip, out _);
        }

        w.Advance(16);
        String(w, label.Class.ToText());
        String(w, label.Campaign);
        String(w, label.Variant);
        NullableTime(w, label.MaliciousFrom);
        NullableTime(w, label.MaliciousTo);
        String(w, Source);
        String(w, runId);
        Int64(w, createdAt.ToUnixTimeMilliseconds());
    }

    private static void NullableTime(ArrayBufferWriter<byte> w, DateTimeOffset? value)
    {
        Byte(w, value is null ? (byte)1 : (byte)0);
        if (value is { } v)
        {
            Int64(w, v.ToUnixTimeMilliseconds());
        }
    }

    private static void Byte(ArrayBufferWriter<byte> w, byte value)
    {
        w.GetSpan(1)[0] = value;
        w.Advance(1);
    }

    private static void Int64(ArrayBufferWriter<byte> w, long value)
    {
        BinaryPrimitives.WriteInt64LittleEndian(w.GetSpan(8), value);
        w.Advance(8);
    }

    private static void String(ArrayBufferWriter<byte> w, string value)
    {
        var bytes = Encoding.UTF8.GetByteCount(value);
        var span = w.GetSpan(bytes + 5);
        var p = 0;
        var v = (uint)bytes;
        while (v >= 0x80)
        {
            span[p++] = (byte)(v | 0x80);
            v >>= 7;
        }

        span[p++] = (byte)v;
        Encoding.UTF8.GetBytes(value, span[p..]);
        w.Advance(p + bytes);
    }
}
