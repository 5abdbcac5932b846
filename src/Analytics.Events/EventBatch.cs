using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using Analytics.Store;

namespace Analytics.Events;

/// <summary>
/// A batch of events as the store takes it: the <c>events</c> block plus the batch's detection
/// aggregates (see <see cref="BatchAggregates"/>), encoded together as one <see cref="EventFrame"/>.
/// The sink, the spool and every bulk writer (the simulator) go through this type, so there is one
/// path from events to ClickHouse and the aggregates can never miss a batch.
/// </summary>
public sealed class EventBatch
{
    private readonly EventBlockEncoder _events;
    private readonly BatchAggregates _aggregates = new();
    private readonly ArrayBufferWriter<byte> _scratch = new(1 << 16);

    public EventBatch(int capacity = 1024) => _events = new EventBlockEncoder(capacity);

    public int Count => _events.Count;

    public void Add(SmtpEvent e)
    {
        _events.Add(e);
        _aggregates.Add(e);
    }

    public void Reset()
    {
        _events.Reset();
        _aggregates.Reset();
    }

    /// <summary>Appends the batch to <paramref name="output"/> as one frame.</summary>
    public void WriteTo(IBufferWriter<byte> output)
    {
        _scratch.ResetWrittenCount();
        _events.WriteTo(_scratch);
        var events = _scratch.WrittenCount;
        _aggregates.WriteActivity(_scratch);
        var activity = _scratch.WrittenCount - events;
        if (_aggregates.FirstSeenRows > 0)
        {
            _aggregates.WriteFirstSeen(_scratch);
        }

        EventFrame.Write(output, Count, _scratch.WrittenSpan, events, activity);
    }

    public byte[] ToArray()
    {
        var output = new ArrayBufferWriter<byte>(1 << 16);
        WriteTo(output);
        return output.WrittenSpan.ToArray();
    }

    /// <summary>Encodes <paramref name="events"/> as one frame and inserts it (no deduplication token).</summary>
    public static async Task InsertAsync(IClickHouseStore store, IEnumerable<SmtpEvent> events, CancellationToken cancellationToken = default)
    {
        var batch = new EventBatch();
        foreach (var e in events)
        {
            batch.Add(e);
        }

        if (batch.Count > 0)
        {
            await EventFrame.InsertAsync(store, batch.ToArray(), null, cancellationToken);
        }
    }
}

/// <summary>
/// The unit the sink inserts and the spool keeps: a 24-byte header (magic, event count, the lengths of
/// the three Native blocks, a CRC-32 of them), then the blocks for <c>events</c>, <c>activity_in</c> and
/// <c>first_seen</c>. Frames are appended one after another in a spill segment; a torn or corrupt
/// frame is recognised by its length or checksum, so recovery keeps every complete frame before it.
/// </summary>
public static class EventFrame
{
    public const int HeaderSize = 24;
    private const uint Magic = 0x31425645; // "EVB1"

    internal static void Write(IBufferWriter<byte> output, int count, ReadOnlySpan<byte> blocks, int eventsLength, int activityLength)
    {
        var header = output.GetSpan(HeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], count);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], eventsLength);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], activityLength);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], blocks.Length - eventsLength - activityLength);
        BinaryPrimitives.WriteUInt32LittleEndian(header[20..], Crc32.HashToUInt32(blocks));
        output.Advance(HeaderSize);
        output.Write(blocks);
    }

    /// <summary>One complete frame: where its blocks are in the buffer it was read from.</summary>
    public readonly record struct Frame(int Count, Range Events, Range Activity, Range FirstSeen, int End);

    /// <summary>
    /// The complete, intact frames at the start of <paramref name="data"/>, in order. Reading stops at
    /// the first frame that is torn (shorter than its header says) or corrupt (bad magic or checksum):
    /// <paramref name="validLength"/> says where.
    /// </summary>
    public static List<Frame> Read(ReadOnlySpan<byte> data, out int validLength)
    {
        var frames = new List<Frame>();
        var at = 0;
        while (data.Length - at >= HeaderSize)
        {
            var header = data[at..];
            var events = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
            var activity = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
            var firstSeen = BinaryPrimitives.ReadInt32LittleEndian(header[16..]);
            if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic || events < 0 || activity < 0 || firstSeen < 0)
            {
                break;
            }

            var body = at + HeaderSize;
            var length = (long)events + activity + firstSeen;
            if (data.Length - body < length || Crc32.HashToUInt32(data.Slice(body, (int)length)) != BinaryPrimitives.ReadUInt32LittleEndian(header[20..]))
            {
                break;
            }

            var end = body + (int)length;
            frames.Add(new Frame(BinaryPrimitives.ReadInt32LittleEndian(header[4..]), body..(body + events), (body + events)..(body + events + activity),
                (body + events + activity)..end, end));
            at = end;
        }

        validLength = at;
        return frames;
    }

    /// <summary>
    /// Inserts every frame of <paramref name="data"/>: the events first, then the aggregates. With a
    /// token each table's insert is idempotent (<c>token</c>, <c>token-a</c>, <c>token-f</c>), so a frame
    /// replayed after a partial success adds nothing twice.
    /// </summary>
    /// <exception cref="InvalidDataException">The data holds a torn or corrupt frame.</exception>
    public static async Task InsertAsync(IClickHouseStore store, ReadOnlyMemory<byte> data, string? token, CancellationToken cancellationToken = default)
    {
        var frames = Read(data.Span, out var valid);
        if (valid != data.Length)
        {
            throw new InvalidDataException($"Event frames are torn or corrupt at byte {valid} of {data.Length}.");
        }

        await store.InsertAsync(EventBlockEncoder.Table, null, InsertFormat.Native, Join(data, frames, f => f.Events), token, cancellationToken);
        await store.InsertAsync(BatchAggregates.ActivityTable, null, InsertFormat.Native, Join(data, frames, f => f.Activity), token is null ? null : token + "-a", cancellationToken);
        var firstSeen = Join(data, frames, f => f.FirstSeen);
        if (!firstSeen.IsEmpty)
        {
            await store.InsertAsync(BatchAggregates.FirstSeenTable, null, InsertFormat.Native, firstSeen, token is null ? null : token + "-f", cancellationToken);
        }
    }

    /// <summary>Counts the events in <paramref name="data"/>'s intact frames.</summary>
    public static long CountEvents(ReadOnlySpan<byte> data) => Read(data, out _).Sum(f => (long)f.Count);

    // Native blocks concatenate: the parts of several frames for one table are one valid input.
    private static ReadOnlyMemory<byte> Join(ReadOnlyMemory<byte> data, List<Frame> frames, Func<Frame, Range> part)
    {
        if (frames.Count == 1)
        {
            return data[part(frames[0])];
        }

        var length = frames.Sum(f => part(f).GetOffsetAndLength(data.Length).Length);
        var joined = new byte[length];
        var at = 0;
        foreach (var f in frames)
        {
            var slice = data.Span[part(f)];
            slice.CopyTo(joined.AsSpan(at));
            at += slice.Length;
        }

        return joined;
    }
}
