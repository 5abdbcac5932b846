using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Analytics.Store;

namespace Analytics.Submission;

/// <summary>Outcome of an import: what was added and what the file already had.</summary>
public sealed record RecipientImportResult(int Domains, int Mailboxes, int Lines);

/// <summary>
/// The local recipient directory in ClickHouse (tables <c>local_domains</c>, <c>local_mailboxes</c>):
/// the API behind <c>analytics recipients import FILE|add|list</c>. Addresses and domains are
/// lower-cased; domains in IDN form are stored as punycode.
/// </summary>
/// <remarks>
/// Import file format: one entry per line; blank lines and everything after <c>#</c> are ignored.
/// <c>user@example.org</c> adds that mailbox (and declares <c>example.org</c> local);
/// <c>@example.org</c> declares a local domain without adding a mailbox. A file with any invalid
/// line is refused as a whole, with the line numbers, so a typo never half-imports.
/// </remarks>
public sealed class RecipientStore
{
    private const string DomainColumns = "domain, active, updated_at, version";
    private const string MailboxColumns = "domain, address, active, updated_at, version";
    private const int BatchRows = 50_000;
    private static readonly IdnMapping Idn = new();
    private static long _lastVersion;

    private readonly IClickHouseStore _store;
    private readonly TimeProvider _time;

    public RecipientStore(IClickHouseStore store, TimeProvider? time = null)
    {
        _store = store;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Raised after a change through this instance, so a listener in the same process refreshes at once.</summary>
    public event EventHandler? Changed;

    /// <summary>Adds a domain (<c>example.org</c> or <c>@example.org</c>) or a mailbox (<c>user@example.org</c>).</summary>
    /// <exception cref="FormatException">Not a domain or address.</exception>
    public async Task AddAsync(string entry, CancellationToken cancellationToken = default)
    {
        var parsed = (entry.Contains('@', StringComparison.Ordinal) ? ParseEntry(entry) : ParseEntry("@" + entry))
            ?? throw new FormatException("An empty entry.");
        if (!parsed.Valid)
        {
            throw new FormatException($"'{entry}' is neither a domain nor an address.");
        }

        await WriteAsync([parsed.Domain], parsed.Address is null ? [] : [(parsed.Domain, parsed.Address)], cancellationToken);
    }

    /// <summary>Imports a file in the format described on the class.</summary>
    /// <exception cref="FormatException">Some lines are invalid; nothing was imported.</exception>
    public async Task<RecipientImportResult> ImportAsync(TextReader reader, CancellationToken cancellationToken = default)
    {
        var domains = new HashSet<string>(StringComparer.Ordinal);
        var mailboxes = new HashSet<(string, string)>();
        var errors = new List<string>();
        var lineNumber = 0;
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            lineNumber++;
            var parsed = ParseEntry(line);
            if (parsed is null)
            {
                continue;
            }

            if (!parsed.Valid)
            {
                if (errors.Count < 20)
                {
                    errors.Add(string.Create(CultureInfo.InvariantCulture, $"line {lineNumber}: '{Truncate(line.Trim(), 80)}'"));
                }

                continue;
            }

            domains.Add(parsed.Domain);
            if (parsed.Address is not null)
            {
                mailboxes.Add((parsed.Domain, parsed.Address));
            }
        }

        if (errors.Count > 0)
        {
            throw new FormatException("Not a domain (@example.org) or an address (user@example.org); nothing imported:" + Environment.NewLine + string.Join(Environment.NewLine, errors));
        }

        await WriteAsync([.. domains], [.. mailboxes], cancellationToken);
        return new RecipientImportResult(domains.Count, mailboxes.Count, lineNumber);
    }

    public async Task<RecipientImportResult> ImportFileAsync(string path, CancellationToken cancellationToken = default)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        return await ImportAsync(reader, cancellationToken);
    }

    public async Task<IReadOnlyList<string>> ListDomainsAsync(CancellationToken cancellationToken = default)
    {
        var rows = await _store.QueryListAsync<DomainRow>("SELECT domain FROM local_domains FINAL WHERE active ORDER BY domain", null, cancellationToken);
        return rows.ConvertAll(r => r.Domain);
    }

    /// <summary>Mailboxes, of one domain or all.</summary>
    public async Task<IReadOnlyList<string>> ListMailboxesAsync(string? domain = null, CancellationToken cancellationToken = default)
    {
        var rows = domain is null
            ? await _store.QueryListAsync<MailboxRow>("SELECT address FROM local_mailboxes FINAL WHERE active ORDER BY domain, address", null, cancellationToken)
            : await _store.QueryListAsync<MailboxRow>("SELECT address FROM local_mailboxes FINAL WHERE active AND domain = {d:String} ORDER BY address",
                QueryParameters.Of(("d", NormalizeDomain(domain) ?? domain)), cancellationToken);
        return rows.ConvertAll(r => r.Address);
    }

    private sealed record DomainRow(string Domain);

    private sealed record MailboxRow(string Address);

    internal async Task<(IReadOnlyList<string> Domains, IReadOnlyList<string> Mailboxes)> LoadAsync(CancellationToken cancellationToken)
    {
        var domains = await ListDomainsAsync(cancellationToken);
        var mailboxes = await ListMailboxesAsync(null, cancellationToken);
        return (domains, mailboxes);
    }

    /// <summary>Lower-cased ASCII (punycode) form of a domain, or null when it is not a plausible domain.</summary>
    public static string? NormalizeDomain(string domain)
    {
        domain = domain.Trim().TrimEnd('.');
        if (domain.Length is 0 or > 253)
        {
            return null;
        }

        try
        {
            domain = Idn.GetAscii(domain).ToLowerInvariant();
        }
        catch (ArgumentException)
        {
            return null;
        }

        foreach (var label in domain.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-' || label.Any(c => !(char.IsAsciiLetterOrDigit(c) || c == '-')))
            {
                return null;
            }
        }

        return domain;
    }

    /// <summary>Lower-cased <c>local@domain</c>, or null when it is not a plausible address.</summary>
    public static string? NormalizeAddress(string address)
    {
        var at = address.LastIndexOf('@');
        if (at <= 0 || at > 64)
        {
            return null;
        }

        var local = address[..at].Trim();
        var domain = NormalizeDomain(address[(at + 1)..]);
        if (domain is null || local.Length == 0 || local.Any(c => char.IsControl(c) || char.IsWhiteSpace(c) || c is '<' or '>' or ',' or ';'))
        {
            return null;
        }

        return local.ToLowerInvariant() + "@" + domain;
    }

    private sealed record Entry(bool Valid, string Domain, string? Address);

    private static Entry? ParseEntry(string line)
    {
        var hash = line.IndexOf('#', StringComparison.Ordinal);
        var text = (hash >= 0 ? line[..hash] : line).Trim();
        if (text.Length == 0)
        {
            return null;
        }

        if (text[0] == '@')
        {
            var domain = NormalizeDomain(text[1..]);
            return domain is null ? new Entry(false, "", null) : new Entry(true, domain, null);
        }

        var address = NormalizeAddress(text);
        return address is null ? new Entry(false, "", null) : new Entry(true, address[(address.LastIndexOf('@') + 1)..], address);
    }

    private async Task WriteAsync(IReadOnlyList<string> domains, IReadOnlyList<(string Domain, string Address)> mailboxes, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var version = NextVersion(now);
        var buffer = new ArrayBufferWriter<byte>(1 << 16);
        foreach (var chunk in domains.Chunk(BatchRows))
        {
            buffer.ResetWrittenCount();
            foreach (var domain in chunk)
            {
                RowBinary.String(buffer, domain);
                RowBinary.Row(buffer, now, version);
            }

            await _store.InsertRowBinaryAsync("local_domains", DomainColumns, buffer.WrittenMemory.ToArray(), null, cancellationToken);
        }

        foreach (var chunk in mailboxes.Chunk(BatchRows))
        {
            buffer.ResetWrittenCount();
            foreach (var (domain, address) in chunk)
            {
                RowBinary.String(buffer, domain);
                RowBinary.String(buffer, address);
                RowBinary.Row(buffer, now, version);
            }

            await _store.InsertRowBinaryAsync("local_mailboxes", MailboxColumns, buffer.WrittenMemory.ToArray(), null, cancellationToken);
        }

        Changed?.Invoke(this, EventArgs.Empty);
    }

    private static ulong NextVersion(DateTimeOffset now)
    {
        while (true)
        {
            var last = Interlocked.Read(ref _lastVersion);
            var next = Math.Max(now.UtcTicks, last + 1);
            if (Interlocked.CompareExchange(ref _lastVersion, next, last) == last)
            {
                return (ulong)next;
            }
        }
    }

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max] + "…";

    /// <summary>The few RowBinary encodings these tables need.</summary>
    private static class RowBinary
    {
        public static void String(ArrayBufferWriter<byte> writer, string value)
        {
            var length = Encoding.UTF8.GetByteCount(value);
            var span = writer.GetSpan(length + 5);
            var n = 0;
            var v = (uint)length;
            do
            {
                var b = (byte)(v & 0x7f);
                v >>= 7;
                span[n++] = v != 0 ? (byte)(b | 0x80) : b;
            }
            while (v != 0);

            n += Encoding.UTF8.GetBytes(value, span[n..]);
            writer.Advance(n);
        }

        // active (Bool), updated_at (DateTime64(3)), version (UInt64)
        public static void Row(ArrayBufferWriter<byte> writer, DateTimeOffset updated, ulong version)
        {
            var span = writer.GetSpan(17);
            span[0] = 1;
            BinaryPrimitives.WriteInt64LittleEndian(span[1..], updated.ToUnixTimeMilliseconds());
            BinaryPrimitives.WriteUInt64LittleEndian(span[9..], version);
            writer.Advance(17);
        }
    }
}
