using System.Security.Cryptography;
using System.Text;
using Analytics.Store;

namespace Analytics.Review.Reviewers;

/// <summary>What a reviewer may do: viewers read, analysts also act.</summary>
public static class ReviewerRoles
{
    public const string Viewer = "viewer";
    public const string Analyst = "analyst";

    public static bool IsValid(string role) => role is Viewer or Analyst;
}

public sealed record Reviewer(string Name, string Role, bool Enabled, DateTime CreatedAt, DateTime UpdatedAt);

/// <summary>
/// Reviewer accounts and their API tokens in the <c>reviewers</c> and <c>reviewer_tokens</c> tables
/// (migration 0013). Passwords are hashed with the submission users' <see cref="PasswordHasher"/>;
/// tokens are kept as SHA-256 only, so a leaked table grants nothing.
/// </summary>
public sealed class ReviewerStore
{
    private const string SelectOne = """
        SELECT name, password_hash, toString(role) AS role, enabled, created_at, updated_at
        FROM reviewers FINAL WHERE name = {name:String}
        """;

    private const string SelectAll = """
        SELECT name, password_hash, toString(role) AS role, enabled, created_at, updated_at
        FROM reviewers FINAL ORDER BY name
        """;

    private const string Insert = """
        INSERT INTO reviewers (name, password_hash, role, enabled, created_at, updated_at, version)
        VALUES ({name:String}, {hash:String}, {role:String}, {enabled:Bool}, {created:DateTime64(3)}, {updated:DateTime64(3)}, {version:UInt64})
        """;

    private const string InsertToken = """
        INSERT INTO reviewer_tokens (token_hash, name, created_at, expires_at, revoked, version)
        VALUES ({hash:String}, {name:String}, {created:DateTime64(3)}, {expires:Nullable(DateTime64(3))}, false, {version:UInt64})
        """;

    private const string SelectToken = """
        SELECT name, expires_at, revoked FROM reviewer_tokens FINAL WHERE token_hash = {hash:String}
        """;

    /// <summary>Tokens start with this, so that a leaked one is recognisable (and greppable).</summary>
    public const string TokenPrefix = "arv_";

    private static long _lastVersion;
    private readonly IClickHouseStore _store;
    private readonly PasswordHasher _hasher;
    private readonly TimeProvider _time;

    public ReviewerStore(IClickHouseStore store, PasswordHasher hasher, TimeProvider time)
    {
        _store = store;
        _hasher = hasher;
        _time = time;
    }

    public static string Normalize(string name) => name.Trim().ToLowerInvariant();

    public async Task<Reviewer> AddAsync(string name, string password, string role, CancellationToken cancellationToken = default)
    {
        name = CheckName(name);
        CheckRole(role);
        ArgumentException.ThrowIfNullOrEmpty(password);
        if (await FindAsync(name, cancellationToken) is not null)
        {
            throw new InvalidOperationException($"Reviewer {name} already exists.");
        }

        var now = _time.GetUtcNow().UtcDateTime;
        await WriteAsync(name, _hasher.Hash(password), role, true, now, now, cancellationToken);
        return new Reviewer(name, role, true, now, now);
    }

    public async Task SetEnabledAsync(string name, bool enabled, CancellationToken cancellationToken = default)
    {
        var (reviewer, hash) = await FindAsync(Normalize(name), cancellationToken) ?? throw new KeyNotFoundException($"No reviewer {Normalize(name)}.");
        await WriteAsync(reviewer.Name, hash, reviewer.Role, enabled, reviewer.CreatedAt, _time.GetUtcNow().UtcDateTime, cancellationToken);
    }

    public async Task<IReadOnlyList<Reviewer>> ListAsync(CancellationToken cancellationToken = default)
    {
        var rows = await _store.QueryListAsync<ReviewerRow>(SelectAll, null, cancellationToken);
        return rows.ConvertAll(r => r.Reviewer);
    }

    public async Task<Reviewer?> GetAsync(string name, CancellationToken cancellationToken = default) =>
        (await FindAsync(Normalize(name), cancellationToken))?.Reviewer;

    /// <summary>
    /// The enabled reviewer whose password this is, or null. An unknown name costs the same time as a
    /// wrong password, so timing does not tell which names exist.
    /// </summary>
    public async Task<Reviewer?> VerifyAsync(string name, string password, CancellationToken cancellationToken = default)
    {
        var found = await FindAsync(Normalize(name), cancellationToken);
        if (found is not { } f)
        {
            _hasher.VerifyDummy(password);
            return null;
        }

        return PasswordHasher.Verify(password, f.Hash) && f.Reviewer.Enabled ? f.Reviewer : null;
    }

    /// <summary>Issues an API token for the reviewer; the token is shown once and kept only as its hash.</summary>
    public async Task<string> IssueTokenAsync(string name, TimeSpan? lifetime, CancellationToken cancellationToken = default)
    {
        var reviewer = await GetAsync(name, cancellationToken) ?? throw new KeyNotFoundException($"No reviewer {Normalize(name)}.");
        if (!reviewer.Enabled)
        {
            throw new InvalidOperationException($"Reviewer {reviewer.Name} is disabled.");
        }

        var token = TokenPrefix + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var now = _time.GetUtcNow().UtcDateTime;
        await _store.ExecuteAsync(InsertToken, QueryParameters.Of(
            ("hash", HashToken(token)), ("name", reviewer.Name), ("created", now), ("expires", lifetime is { } l ? now + l : null), ("version", NextVersion(now))),
            cancellationToken);
        return token;
    }

    /// <summary>The enabled reviewer a bearer token belongs to, or null (unknown, expired, revoked, disabled).</summary>
    public async Task<Reviewer?> ResolveTokenAsync(string token, CancellationToken cancellationToken = default)
    {
        if (!token.StartsWith(TokenPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        var row = await _store.QueryFirstOrDefaultAsync<TokenRow>(SelectToken, QueryParameters.Of(("hash", HashToken(token))), cancellationToken);
        if (row is null || row.Revoked || (row.ExpiresAt is { } expires && expires <= _time.GetUtcNow().UtcDateTime))
        {
            return null;
        }

        var reviewer = await GetAsync(row.Name, cancellationToken);
        return reviewer is { Enabled: true } ? reviewer : null;
    }

    private static string HashToken(string token) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)));

    private async Task<(Reviewer Reviewer, string Hash)?> FindAsync(string name, CancellationToken cancellationToken)
    {
        var row = await _store.QueryFirstOrDefaultAsync<ReviewerRow>(SelectOne, QueryParameters.Of(("name", name)), cancellationToken);
        return row is null ? null : (row.Reviewer, row.PasswordHash);
    }

    private sealed record ReviewerRow(string Name, string PasswordHash, string Role, bool Enabled, DateTime CreatedAt, DateTime UpdatedAt)
    {
        public Reviewer Reviewer => new(Name, Role, Enabled, CreatedAt, UpdatedAt);
    }

    private sealed record TokenRow(string Name, DateTime? ExpiresAt, bool Revoked);

    private Task WriteAsync(string name, string hash, string role, bool enabled, DateTime created, DateTime updated, CancellationToken cancellationToken) =>
        _store.ExecuteAsync(Insert, QueryParameters.Of(
            ("name", name), ("hash", hash), ("role", role), ("enabled", enabled), ("created", created), ("updated", updated), ("version", NextVersion(updated))),
            cancellationToken);

    // Two changes within one millisecond must still order: versions only ever grow in this process.
    private static ulong NextVersion(DateTime at)
    {
        while (true)
        {
            var last = Interlocked.Read(ref _lastVersion);
            var next = Math.Max(last + 1, at.Ticks);
            if (Interlocked.CompareExchange(ref _lastVersion, next, last) == last)
            {
                return (ulong)next;
            }
        }
    }

    private static string CheckName(string name)
    {
        name = Normalize(name);
        if (name.Length is 0 or > 100 || name.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
        {
            throw new ArgumentException("A reviewer name is 1 to 100 characters without spaces.", nameof(name));
        }

        return name;
    }

    private static void CheckRole(string role)
    {
        if (!ReviewerRoles.IsValid(role))
        {
            throw new ArgumentException($"The role must be {ReviewerRoles.Viewer} or {ReviewerRoles.Analyst}.", nameof(role));
        }
    }
}
