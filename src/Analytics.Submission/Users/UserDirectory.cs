using System.Collections.Frozen;
using Analytics.Store;
using Analytics.Submission.Rules;
using Microsoft.Extensions.Logging;

namespace Analytics.Submission;

/// <summary>
/// The listener's in-memory view of <see cref="UserStore"/>: an immutable snapshot swapped
/// atomically, so AUTH does no I/O and takes no lock, only the hash. Reloaded periodically (changes
/// by other nodes) and immediately after a change through the same <see cref="UserStore"/>.
/// </summary>
public sealed partial class UserDirectory : ICredentialVerifier
{
    private readonly UserStore _store;
    private readonly PasswordHasher _hasher;
    private readonly ILogger _logger;
    private readonly DirectoryOptions _options;
    private readonly TimeProvider _time;
    private readonly HashGate _gate;
    private readonly CredentialCache _cache;
    private FrozenDictionary<string, UserCredential> _snapshot = FrozenDictionary<string, UserCredential>.Empty;

    public UserDirectory(UserStore store, PasswordHasher hasher, ILogger<UserDirectory> logger, DirectoryOptions? options = null, TimeProvider? time = null)
    {
        _store = store;
        _hasher = hasher;
        _logger = logger;
        _options = options ?? new DirectoryOptions();
        _time = time ?? TimeProvider.System;
        _gate = new HashGate(_options.HashConcurrency > 0 ? _options.HashConcurrency : Environment.ProcessorCount, _options.AuthQueue);
        _cache = new CredentialCache(_options.AuthCacheTtl, _time);
        _store.Changed += (_, _) => _ = RefreshQuietlyAsync();
    }

    /// <summary>Password checks waiting for a hashing slot.</summary>
    public int HashesWaiting => _gate.Waiting;

    /// <summary>Password hashes computed since start (cache hits and refusals before hashing cost none).</summary>
    public long HashesComputed => Interlocked.Read(ref _hashes);

    private long _hashes;

    public int Count => Volatile.Read(ref _snapshot).Count;

    public async Task RefreshAsync(CancellationToken cancellationToken = default)
    {
        var users = await _store.LoadCredentialsAsync(cancellationToken);
        Volatile.Write(ref _snapshot, users.ToFrozenDictionary(u => u.Name, StringComparer.Ordinal));
    }

    internal async Task RefreshQuietlyAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await RefreshAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Keep serving the last snapshot: a store outage must not lock every user out.
            LogRefreshFailed(_logger, ex);
        }
    }

    /// <summary>
    /// Checks a password. A credential verified within <see cref="DirectoryOptions.AuthCacheTtl"/> is
    /// recognised from memory (a keyed hash of name and password, never the password) without hashing
    /// again; otherwise the check waits for a hashing slot (<see cref="HashGate"/>), ahead of the queue
    /// when <paramref name="ownersNetwork"/>, and answers <see cref="CredentialCheck.Busy"/> rather than
    /// wait too long. Unknown names cost the same hash as known ones.
    /// </summary>
    public async ValueTask<CredentialCheck> VerifyAsync(string user, string password, bool ownersNetwork, CancellationToken cancellationToken = default)
    {
        var snapshot = Volatile.Read(ref _snapshot);
        var found = snapshot.TryGetValue(AccountName.Normalize(user), out var credential);
        if (found && _cache.Contains(credential!.Name, password, credential.PasswordHash))
        {
            return credential.Enabled ? CredentialCheck.Ok : CredentialCheck.Disabled;
        }

        if (!await _gate.EnterAsync(ownersNetwork, _options.AuthQueueWait, _time, cancellationToken))
        {
            return CredentialCheck.Busy;
        }

        bool matches;
        Interlocked.Increment(ref _hashes);
        try
        {
            if (!found)
            {
                _hasher.VerifyDummy(password);
                return CredentialCheck.UnknownUser;
            }

            matches = PasswordHasher.Verify(password, credential!.PasswordHash);
        }
        finally
        {
            _gate.Release();
        }

        if (!matches)
        {
            return CredentialCheck.BadPassword;
        }

        _cache.Add(credential.Name, password, credential.PasswordHash);
        return credential.Enabled ? CredentialCheck.Ok : CredentialCheck.Disabled;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not reload the user directory; keeping the previous snapshot")]
    private static partial void LogRefreshFailed(ILogger logger, Exception exception);
}
