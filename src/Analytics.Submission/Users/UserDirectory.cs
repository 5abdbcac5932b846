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
    private FrozenDictionary<string, UserCredential> _snapshot = FrozenDictionary<string, UserCredential>.Empty;

    public UserDirectory(UserStore store, PasswordHasher hasher, ILogger<UserDirectory> logger)
    {
        _store = store;
        _hasher = hasher;
        _logger = logger;
        _store.Changed += (_, _) => _ = RefreshQuietlyAsync();
    }

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

    public CredentialCheck Verify(string user, string password)
    {
        var snapshot = Volatile.Read(ref _snapshot);
        if (!snapshot.TryGetValue(AccountName.Normalize(user), out var credential))
        {
            _hasher.VerifyDummy(password);
            return CredentialCheck.UnknownUser;
        }

        if (!PasswordHasher.Verify(password, credential.PasswordHash))
        {
            return CredentialCheck.BadPassword;
        }

        return credential.Enabled ? CredentialCheck.Ok : CredentialCheck.Disabled;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not reload the user directory; keeping the previous snapshot")]
    private static partial void LogRefreshFailed(ILogger logger, Exception exception);
}
