using System.Globalization;
using Analytics.Store;

namespace Analytics.Submission;

/// <summary>An account as the operator sees it; the hash never leaves the store layer.</summary>
public sealed record UserAccount(string Name, bool Enabled, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

/// <summary>What the listener keeps in memory for AUTH.</summary>
internal sealed record UserCredential(string Name, string PasswordHash, bool Enabled);

/// <summary>
/// The user directory in ClickHouse (table <c>users</c>, a ReplacingMergeTree keyed by name): every
/// change is a new row with a higher version, so several listener nodes read the same accounts and a
/// node that crashed mid-change leaves the previous row in force. This is the API behind
/// <c>analytics users add|passwd|disable|enable|list</c>. Names are trimmed and lower-cased.
/// </summary>
public sealed class UserStore
{
    private const string SelectAll = """
        SELECT name, password_hash, enabled, created_at, updated_at
        FROM users FINAL
        ORDER BY name
        """;

    private const string SelectOne = """
        SELECT name, password_hash, enabled, created_at, updated_at
        FROM users FINAL
        WHERE name = {name:String}
        """;

    private const string Insert = """
        INSERT INTO users (name, password_hash, enabled, created_at, updated_at, version)
        VALUES ({name:String}, {hash:String}, {enabled:Bool}, {created:DateTime64(3)}, {updated:DateTime64(3)}, {version:UInt64})
        """;

    private static long _lastVersion;
    private readonly IClickHouseStore _store;
    private readonly PasswordHasher _hasher;
    private readonly TimeProvider _time;

    public UserStore(IClickHouseStore store, PasswordHasher? hasher = null, TimeProvider? time = null)
    {
        _store = store;
        _hasher = hasher ?? new PasswordHasher();
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Raised after a change made through this instance, so a listener in the same process refreshes at once.</summary>
    public event EventHandler? Changed;

    public static string Normalize(string name) => AccountName.Normalize(name);

    /// <summary>
    /// Where accounts logged in from lately: per account and network, the first and last successful
    /// AUTH, so the fast path knows its owners' networks, and how long each has been theirs, from the
    /// first connection after a restart. Read from <c>first_seen</c>, which the sink keeps per (account,
    /// network) at every login, not from a scan of the events.
    /// </summary>
    public async Task<IReadOnlyList<(string User, AddressKey Network, DateTime First, DateTime Last)>> RecentLoginsAsync(TimeSpan within, CancellationToken cancellationToken = default)
    {
        var rows = await _store.QueryListAsync<LoginRow>("""
            SELECT user AS account, value AS network, min(first_seen) AS first_login, max(last_seen) AS last_login
            FROM first_seen
            WHERE seen_kind = 'net' AND user != ''
            GROUP BY account, network
            HAVING last_login > now64(3) - toIntervalSecond({within:UInt32})
            ORDER BY last_login DESC
            LIMIT 200000
            """, QueryParameters.Of(("within", (uint)Math.Min(within.TotalSeconds, uint.MaxValue))), cancellationToken);
        return rows.Where(r => System.Net.IPAddress.TryParse(r.Network, out _))
            .Select(r => (r.Account, AddressKey.Of(System.Net.IPAddress.Parse(r.Network)).Network(), r.FirstLogin, r.LastLogin)).ToList();
    }

    private sealed record LoginRow(string Account, string Network, DateTime FirstLogin, DateTime LastLogin);

    /// <summary>Creates an enabled account.</summary>
    /// <exception cref="InvalidOperationException">The user exists.</exception>
    /// <exception cref="ArgumentException">The name or password is not acceptable.</exception>
    public async Task AddAsync(string name, string password, CancellationToken cancellationToken = default)
    {
        name = CheckName(name);
        CheckPassword(password);
        if (await FindAsync(name, cancellationToken) is not null)
        {
            throw new InvalidOperationException($"User '{name}' already exists.");
        }

        var now = _time.GetUtcNow();
        await WriteAsync(name, _hasher.Hash(password), enabled: true, now, now, cancellationToken);
    }

    /// <exception cref="KeyNotFoundException">No such user.</exception>
    public async Task SetPasswordAsync(string name, string password, CancellationToken cancellationToken = default)
    {
        CheckPassword(password);
        var current = await RequireAsync(name, cancellationToken);
        await WriteAsync(current.Name, _hasher.Hash(password), current.Enabled, current.CreatedAt, _time.GetUtcNow(), cancellationToken);
    }

    /// <exception cref="KeyNotFoundException">No such user.</exception>
    public async Task SetEnabledAsync(string name, bool enabled, CancellationToken cancellationToken = default)
    {
        var current = await RequireAsync(name, cancellationToken);
        await WriteAsync(current.Name, current.Hash, enabled, current.CreatedAt, _time.GetUtcNow(), cancellationToken);
    }

    public Task DisableAsync(string name, CancellationToken cancellationToken = default) => SetEnabledAsync(name, false, cancellationToken);

    public Task EnableAsync(string name, CancellationToken cancellationToken = default) => SetEnabledAsync(name, true, cancellationToken);

    public async Task<IReadOnlyList<UserAccount>> ListAsync(CancellationToken cancellationToken = default)
    {
        var result = await _store.QueryAsync(SelectAll, null, cancellationToken);
        return [.. Enumerable.Range(0, result.Rows.Count).Select(i => ToRow(result, i)).Select(r => new UserAccount(r.Name, r.Enabled, r.CreatedAt, r.UpdatedAt))];
    }

    internal async Task<IReadOnlyList<UserCredential>> LoadCredentialsAsync(CancellationToken cancellationToken)
    {
        var result = await _store.QueryAsync(SelectAll, null, cancellationToken);
        return [.. Enumerable.Range(0, result.Rows.Count).Select(i => ToRow(result, i)).Select(r => new UserCredential(r.Name, r.Hash, r.Enabled))];
    }

    private sealed record Row(string Name, string Hash, bool Enabled, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

    private static Row ToRow(QueryResult result, int i) => new(
        result.Get<string>(i, "name"),
        result.Get<string>(i, "password_hash"),
        result.Get<bool>(i, "enabled"),
        new DateTimeOffset(result.Get<DateTime>(i, "created_at"), TimeSpan.Zero),
        new DateTimeOffset(result.Get<DateTime>(i, "updated_at"), TimeSpan.Zero));

    private async Task<Row?> FindAsync(string name, CancellationToken cancellationToken)
    {
        var result = await _store.QueryAsync(SelectOne, QueryParameters.Of(("name", name)), cancellationToken);
        return result.Rows.Count == 0 ? null : ToRow(result, 0);
    }

    private async Task<Row> RequireAsync(string name, CancellationToken cancellationToken) =>
        await FindAsync(CheckName(name), cancellationToken) ?? throw new KeyNotFoundException($"No user '{Normalize(name)}'.");

    private async Task WriteAsync(string name, string hash, bool enabled, DateTimeOffset created, DateTimeOffset updated, CancellationToken cancellationToken)
    {
        await _store.ExecuteAsync(Insert, QueryParameters.Of(
            ("name", name), ("hash", hash), ("enabled", enabled), ("created", created), ("updated", updated), ("version", NextVersion())), cancellationToken);
        Changed?.Invoke(this, EventArgs.Empty);
    }

    // Versions order the rows of one user: wall-clock ticks, never repeating within this process.
    private ulong NextVersion()
    {
        var now = _time.GetUtcNow().UtcTicks;
        while (true)
        {
            var last = Interlocked.Read(ref _lastVersion);
            var next = Math.Max(now, last + 1);
            if (Interlocked.CompareExchange(ref _lastVersion, next, last) == last)
            {
                return (ulong)next;
            }
        }
    }

    private static string CheckName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var normalized = Normalize(name);
        if (!AccountName.IsValid(normalized))
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"A user name is 1-320 characters without spaces or control characters."), nameof(name));
        }

        return normalized;
    }

    private static void CheckPassword(string password)
    {
        ArgumentNullException.ThrowIfNull(password);
        if (password.Length == 0 || password.Length > 1024)
        {
            throw new ArgumentException("A password is 1-1024 characters.", nameof(password));
        }
    }
}
