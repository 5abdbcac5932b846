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

/// <summary>A token just issued: the secret (shown once, never stored) and the id it is listed and revoked by.</summary>
public sealed record IssuedToken(string Id, string Token, string Name, DateTime CreatedAt, DateTime ExpiresAt);

/// <summary>What is known of a token without its secret. <see cref="ExpiresAt"/> is the effective expiry.</summary>
public sealed record TokenInfo(string Id, string Name, DateTime CreatedAt, DateTime ExpiresAt, bool Revoked, DateTime? LastUsedAt)
{
    public string State(DateTime now) => Revoked ? "revoked" : ExpiresAt <= now ? "expired" : "active";
}

/// <summary>
/// Reviewer accounts and their API tokens in the <c>reviewers</c> and <c>reviewer_tokens</c> tables
/// (migrations 0013, 0050). Passwords are hashed with the submission users' <see cref="PasswordHasher"/>;
/// tokens are kept as SHA-256 only, so a leaked table grants nothing. Every token expires
/// (<see cref="ReviewOptions.TokenLifetime"/> unless told otherwise, at most
/// <see cref="ReviewOptions.TokenMaxLifetime"/>) and has an id, its first <see cref="TokenIdLength"/>
/// characters, by which it is listed and revoked on its own. Tokens are looked up on every request, so
/// a revocation or an expiry takes effect at the next one.
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
        INSERT INTO reviewer_tokens (token_hash, id, name, created_at, expires_at, revoked, version)
        VALUES ({hash:String}, {id:String}, {name:String}, {created:DateTime64(3)}, {expires:Nullable(DateTime64(3))}, {revoked:Bool}, {version:UInt64})
        """;

    private const string SelectToken = """
        SELECT token_hash, id, name, created_at, expires_at, revoked FROM reviewer_tokens FINAL WHERE token_hash = {hash:String}
        """;

    private const string SelectTokensById = """
        SELECT token_hash, id, name, created_at, expires_at, revoked FROM reviewer_tokens FINAL WHERE id = {id:String}
        """;

    private const string SelectTokensOf = """
        SELECT t.id AS id, t.name AS name, t.created_at AS created_at, t.expires_at AS expires_at, t.revoked AS revoked, u.last_used_at AS last_used_at
        FROM (SELECT id, name, created_at, expires_at, revoked FROM reviewer_tokens FINAL WHERE name = {name:String}) AS t
        LEFT JOIN (SELECT id, CAST(max(last_used_at) AS Nullable(DateTime64(3, 'UTC'))) AS last_used_at FROM reviewer_token_uses GROUP BY id) AS u ON u.id = t.id
        ORDER BY t.created_at, t.id
        """;

    private const string InsertUse = """
        INSERT INTO reviewer_token_uses (id, last_used_at) VALUES ({id:String}, {at:DateTime64(3)})
        """;

    /// <summary>Tokens start with this, so that a leaked one is recognisable (and greppable).</summary>
    public const string TokenPrefix = "arv_";

    /// <summary>A token's id is its first characters: the prefix and 8 of its 43 random ones (48 of 256 bits).</summary>
    public const int TokenIdLength = 12;

    /// <summary>A token's last use is written at most this often (one small insert per token and period).</summary>
    public static readonly TimeSpan LastUsedResolution = TimeSpan.FromMinutes(10);

    private static long _lastVersion;
    private readonly IClickHouseStore _store;
    private readonly PasswordHasher _hasher;
    private readonly TimeProvider _time;
    private readonly TimeSpan _tokenLifetime;
    private readonly TimeSpan _tokenMaxLifetime;

    // Token id → when its use was last written; only tokens that resolved land here, so it is as large as the set of live tokens.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, DateTime> _lastUseWritten = new(StringComparer.Ordinal);

    /// <param name="options">Token lifetimes (<see cref="ReviewOptions.TokenLifetime"/>, <see cref="ReviewOptions.TokenMaxLifetime"/>); default when null.</param>
    public ReviewerStore(IClickHouseStore store, PasswordHasher hasher, TimeProvider time, ReviewOptions? options = null)
    {
        options ??= new ReviewOptions();
        _store = store;
        _hasher = hasher;
        _time = time;
        _tokenLifetime = options.TokenLifetime;
        _tokenMaxLifetime = options.TokenMaxLifetime;
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

    /// <summary>
    /// Issues an API token for the reviewer, valid for <paramref name="lifetime"/> (default
    /// <see cref="ReviewOptions.TokenLifetime"/>, at most <see cref="ReviewOptions.TokenMaxLifetime"/>).
    /// The token is returned once and kept only as its hash.
    /// </summary>
    public async Task<IssuedToken> IssueTokenAsync(string name, TimeSpan? lifetime, CancellationToken cancellationToken = default)
    {
        var days = lifetime ?? _tokenLifetime;
        if (days <= TimeSpan.Zero || days > _tokenMaxLifetime)
        {
            throw new ArgumentException(
                $"A token lives at most {Describe(_tokenMaxLifetime)} (Review:TokenMaxLifetime), and more than nothing; asked for {Describe(days)}.", nameof(lifetime));
        }

        var reviewer = await GetAsync(name, cancellationToken) ?? throw new KeyNotFoundException($"No reviewer {Normalize(name)}.");
        if (!reviewer.Enabled)
        {
            throw new InvalidOperationException($"Reviewer {reviewer.Name} is disabled.");
        }

        var token = TokenPrefix + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var id = token[..TokenIdLength];
        var now = _time.GetUtcNow().UtcDateTime;
        var expires = now + days;
        await _store.ExecuteAsync(InsertToken, QueryParameters.Of(
            ("hash", HashToken(token)), ("id", id), ("name", reviewer.Name), ("created", now), ("expires", expires), ("revoked", false), ("version", NextVersion(now))),
            cancellationToken);
        return new IssuedToken(id, token, reviewer.Name, now, expires);
    }

    /// <summary>The enabled reviewer a bearer token belongs to, or null (unknown, expired, revoked, disabled).</summary>
    public async Task<Reviewer?> ResolveTokenAsync(string token, CancellationToken cancellationToken = default)
    {
        if (!token.StartsWith(TokenPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        var row = await _store.QueryFirstOrDefaultAsync<TokenRow>(SelectToken, QueryParameters.Of(("hash", HashToken(token))), cancellationToken);
        var now = _time.GetUtcNow().UtcDateTime;
        if (row is null || row.Revoked || ExpiresAt(row) <= now)
        {
            return null;
        }

        var reviewer = await GetAsync(row.Name, cancellationToken);
        if (reviewer is not { Enabled: true })
        {
            return null;
        }

        if (!_lastUseWritten.TryGetValue(row.Id, out var written) || now - written >= LastUsedResolution)
        {
            _lastUseWritten[row.Id] = now;
            await _store.ExecuteAsync(InsertUse, QueryParameters.Of(("id", row.Id), ("at", now)), cancellationToken);
        }

        return reviewer;
    }

    /// <summary>The reviewer's tokens, oldest first, revoked and expired ones included; never the secrets.</summary>
    public async Task<IReadOnlyList<TokenInfo>> ListTokensAsync(string name, CancellationToken cancellationToken = default)
    {
        var reviewer = await GetAsync(name, cancellationToken) ?? throw new KeyNotFoundException($"No reviewer {Normalize(name)}.");
        var rows = await _store.QueryListAsync<TokenListRow>(SelectTokensOf, QueryParameters.Of(("name", reviewer.Name)), cancellationToken);
        return rows.ConvertAll(r => new TokenInfo(r.Id, r.Name, r.CreatedAt, r.ExpiresAt ?? r.CreatedAt + _tokenLifetime, r.Revoked, r.LastUsedAt));
    }

    /// <summary>
    /// Revokes one token, by its id (or by the whole token, e.g. one found leaked): it is refused from the
    /// next request on. Revoking a revoked token changes nothing.
    /// </summary>
    public async Task<TokenInfo> RevokeTokenAsync(string idOrToken, CancellationToken cancellationToken = default)
    {
        idOrToken = idOrToken.Trim();
        var whole = idOrToken.Length > TokenIdLength && idOrToken.StartsWith(TokenPrefix, StringComparison.Ordinal);
        var rows = whole
            ? await _store.QueryListAsync<TokenRow>(SelectToken, QueryParameters.Of(("hash", HashToken(idOrToken))), cancellationToken)
            : await _store.QueryListAsync<TokenRow>(SelectTokensById, QueryParameters.Of(("id", idOrToken)), cancellationToken);
        var row = rows.Count switch
        {
            0 => throw new KeyNotFoundException($"No token {(whole ? idOrToken[..TokenIdLength] + "…" : idOrToken)}."),
            1 => rows[0],
            _ => throw new InvalidOperationException($"{rows.Count} tokens have the id {idOrToken}; revoke by the whole token, or disable the reviewer."),
        };
        if (!row.Revoked)
        {
            var now = _time.GetUtcNow().UtcDateTime;
            await _store.ExecuteAsync(InsertToken, QueryParameters.Of(
                ("hash", row.TokenHash), ("id", row.Id), ("name", row.Name), ("created", row.CreatedAt), ("expires", row.ExpiresAt), ("revoked", true), ("version", NextVersion(now))),
                cancellationToken);
        }

        return new TokenInfo(row.Id, row.Name, row.CreatedAt, ExpiresAt(row), true, null);
    }

    // Tokens issued before expiries existed have none: they last the default lifetime from their issue.
    private DateTime ExpiresAt(TokenRow row) => row.ExpiresAt ?? row.CreatedAt + _tokenLifetime;

    private static string Describe(TimeSpan span) =>
        span.TotalDays >= 1 && span.Ticks % TimeSpan.TicksPerDay == 0 ? $"{span.TotalDays:0} days" : span.ToString("c", System.Globalization.CultureInfo.InvariantCulture);

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

    private sealed record TokenRow(string TokenHash, string Id, string Name, DateTime CreatedAt, DateTime? ExpiresAt, bool Revoked);

    private sealed record TokenListRow(string Id, string Name, DateTime CreatedAt, DateTime? ExpiresAt, bool Revoked, DateTime? LastUsedAt);

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
