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
    private readonly int[] _lengths = new int[EventFrame.Tables.Length];

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
        var lengths = _lengths;
        var at = 0;
        void Mark(int block)
        {
            lengths[block] = _scratch.WrittenCount - at;
            at = _scratch.WrittenCount;
        }

        _events.WriteTo(_scratch);
        Mark(0);
        _aggregates.WriteActivity(_scratch);
        Mark(1);
        _aggregates.WriteHourly(_scratch);
        Mark(2);
        _aggregates.WriteActiveEntities(_scratch);
        Mark(3);
        if (_aggregates.FirstSeenRows > 0)
        {
            _aggregates.WriteFirstSeen(_scratch);
        }

        Mark(4);
        EventFrame.Write(output, Count, _scratch.WrittenSpan, lengths);
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
/// The unit the sink inserts and the spool keeps: a header (magic, event count, the length of each
/// table's Native block, a CRC-32 of the blocks), then the blocks for <see cref="Tables"/> in order.
/// Frames are appended one after another in a spill segment; a torn or corrupt frame is recognised
/// by its length or checksum, so recovery keeps every complete frame before it.
/// </summary>
public static class EventFrame
{
    /// <summary>The tables a frame writes, in insert order (events first), and each one's token suffix.</summary>
    public static readonly string[] Tables = [EventBlockEncoder.Table, BatchAggregates.ActivityTable, BatchAggregates.HourlyTable, BatchAggregates.ActiveTable, BatchAggregates.FirstSeenTable];

    // Frames written before the sink built the uniq states itself (EVB2, spooled by an older build) carry
    // the minute and hour rows with their distinct values as arrays, for the Null tables whose views
    // (0030, 0040) make the states: same header, same order, those two tables instead.
    private static readonly string[] LegacyTables = [EventBlockEncoder.Table, BatchAggregates.LegacyActivityTable, BatchAggregates.LegacyHourlyTable, BatchAggregates.ActiveTable, BatchAggregates.FirstSeenTable];

    private static readonly string[] TokenSuffixes = ["", "-a", "-h", "-e", "-f"];

    public static int HeaderSize { get; } = 12 + 4 * Tables.Length;

    private const uint Magic = 0x33425645; // "EVB3"
    private const uint LegacyMagic = 0x32425645; // "EVB2"

    internal static void Write(IBufferWriter<byte> output, int count, ReadOnlySpan<byte> blocks, ReadOnlySpan<int> lengths)
    {
        var header = output.GetSpan(HeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], count);
        for (var i = 0; i < lengths.Length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(header[(8 + 4 * i)..], lengths[i]);
        }

        BinaryPrimitives.WriteUInt32LittleEndian(header[(HeaderSize - 4)..], Crc32.HashToUInt32(blocks));
        output.Advance(HeaderSize);
        output.Write(blocks);
    }

    /// <summary>One complete frame: where each table's block is in the buffer it was read from, and the tables they go to.</summary>
    public sealed record Frame(int Count, Range[] Blocks, int End)
    {
        public IReadOnlyList<string> Tables { get; init; } = EventFrame.Tables;
    }

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
            var magic = BinaryPrimitives.ReadUInt32LittleEndian(header);
            if (magic is not (Magic or LegacyMagic))
            {
                break;
            }

            var blocks = new Range[Tables.Length];
            var start = at + HeaderSize;
            long end = start;
            for (var i = 0; i < Tables.Length; i++)
            {
                var length = BinaryPrimitives.ReadInt32LittleEndian(header[(8 + 4 * i)..]);
                if (length < 0 || end + length > data.Length)
                {
                    end = -1;
                    break;
                }

                blocks[i] = (int)end..(int)(end + length);
                end += length;
            }

            if (end < 0 || Crc32.HashToUInt32(data[start..(int)end]) != BinaryPrimitives.ReadUInt32LittleEndian(header[(HeaderSize - 4)..]))
            {
                break;
            }

            frames.Add(new Frame(BinaryPrimitives.ReadInt32LittleEndian(header[4..]), blocks, (int)end) { Tables = magic == Magic ? Tables : LegacyTables });
            at = (int)end;
        }

        validLength = at;
        return frames;
    }

    /// <summary>The event count a frame header at the start of <paramref name="data"/> claims (0 when unreadable).</summary>
    internal static int ClaimedCount(ReadOnlySpan<byte> data) =>
        data.Length >= HeaderSize && BinaryPrimitives.ReadUInt32LittleEndian(data) is Magic or LegacyMagic ? Math.Max(0, BinaryPrimitives.ReadInt32LittleEndian(data[4..])) : 0;

    /// <summary>
    /// Inserts every frame of <paramref name="data"/>: the events first, then the aggregates. With a
    /// token each table's insert is idempotent (the token plus a suffix per table), so a frame
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

        // Frames of both layouts only meet in a spool written across an upgrade: each run of one
        // layout goes in as one insert per table (a token per run, so a replay still matches).
        var run = 0;
        for (var first = 0; first < frames.Count;)
        {
            var last = first;
            while (last + 1 < frames.Count && ReferenceEquals(frames[last + 1].Tables, frames[first].Tables))
            {
                last++;
            }

            var part = first == 0 && last == frames.Count - 1 ? frames : frames.GetRange(first, last - first + 1);
            var runToken = token is null ? null : run == 0 ? token : token + "-r" + run.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var tables = frames[first].Tables;
            for (var table = 0; table < tables.Count; table++)
            {
                var block = Join(data, part, table);
                if (!block.IsEmpty)
                {
                    await store.InsertAsync(tables[table], null, InsertFormat.Native, block, runToken is null ? null : runToken + TokenSuffixes[table], cancellationToken);
                }
            }

            run++;
            first = last + 1;
        }
    }

    /// <summary>Counts the events in <paramref name="data"/>'s intact frames.</summary>
    public static long CountEvents(ReadOnlySpan<byte> data) => Read(data, out _).Sum(f => (long)f.Count);

    // Native blocks concatenate: the blocks of several frames for one table are one valid input.
    private static ReadOnlyMemory<byte> Join(ReadOnlyMemory<byte> data, List<Frame> frames, int table)
    {
        if (frames.Count == 1)
        {
            return data[frames[0].Blocks[table]];
        }

        var length = frames.Sum(f => f.Blocks[table].GetOffsetAndLength(data.Length).Length);
        var joined = new byte[length];
        var at = 0;
        foreach (var f in frames)
        {
            var slice = data.Span[f.Blocks[table]];
            slice.CopyTo(joined.AsSpan(at));
            at += slice.Length;
        }

        return joined;
    }
}
