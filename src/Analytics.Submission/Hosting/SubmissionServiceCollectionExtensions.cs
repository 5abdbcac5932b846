using Analytics.Events;
using Analytics.Limits;
using Analytics.Store;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Submission;

public static class SubmissionServiceCollectionExtensions
{
    /// <summary>
    /// Registers the SMTP listener and its directories, bound to the <c>Submission</c> section and
    /// validated at start-up (before any port opens), plus a hosted service that loads the
    /// directories, starts the listener, refreshes the snapshots and stops gracefully.
    /// The host registers <see cref="IClickHouseStore"/> (migrated), <see cref="IEventPublisher"/> and
    /// the limits (<c>AddLimits</c>).
    /// </summary>
    public static IServiceCollection AddSubmission(this IServiceCollection services)
    {
        services.AddSectionOptions<SubmissionOptions>(SubmissionOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<SubmissionOptions>, SubmissionOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp => new PasswordHasher(sp.GetRequiredService<IOptions<SubmissionOptions>>().Value.Directory.Pbkdf2Iterations));
        services.TryAddSingleton(sp => new UserStore(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<PasswordHasher>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(sp => new RecipientStore(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(sp => new UserDirectory(sp.GetRequiredService<UserStore>(), sp.GetRequiredService<PasswordHasher>(),
            sp.GetRequiredService<ILogger<UserDirectory>>(), sp.GetRequiredService<IOptions<SubmissionOptions>>().Value.Directory, sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<RecipientDirectory>();
        services.TryAddSingleton(sp => new SubmissionListener(
            sp.GetRequiredService<IOptions<SubmissionOptions>>().Value,
            sp.GetRequiredService<IOptions<LimitsOptions>>().Value,
            sp.GetRequiredService<UserDirectory>(),
            sp.GetRequiredService<RecipientDirectory>(),
            sp.GetRequiredService<ILimitBook>(),
            sp.GetRequiredService<IEventPublisher>(),
            sp.GetRequiredService<ILogger<SubmissionListener>>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<Delivery.IMailQueue>()));
        services.AddHostedService<SubmissionHostedService>();
        return services;
    }
}

/// <summary>
/// Runs the listener inside a host: load directories, start, refresh periodically, stop gracefully.
/// The SMTP ports open last, once every other hosted service (the admin socket, the console) has
/// started: a client that finds a port open finds everything else ready too.
/// </summary>
public sealed partial class SubmissionHostedService : IHostedLifecycleService, IDisposable
{
    private readonly SubmissionListener _listener;
    private readonly UserDirectory _users;
    private readonly RecipientDirectory _recipients;
    private readonly UserStore _userStore;
    private readonly ILimitBook _limits;
    private readonly LimitsOptions _limitOptions;
    private readonly SubmissionOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private Task _refresh = Task.CompletedTask;

    public SubmissionHostedService(SubmissionListener listener, UserDirectory users, RecipientDirectory recipients, UserStore userStore, ILimitBook limits,
        IOptions<SubmissionOptions> options, IOptions<LimitsOptions> limitOptions, TimeProvider time, ILogger<SubmissionHostedService> logger)
    {
        _listener = listener;
        _users = users;
        _recipients = recipients;
        _userStore = userStore;
        _limits = limits;
        _limitOptions = limitOptions.Value;
        _options = options.Value;
        _time = time;
        _logger = logger;
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // The first load must succeed: serving with an empty directory would reject every user and mailbox.
        await _users.RefreshAsync(cancellationToken);
        await _recipients.RefreshAsync(cancellationToken);
        LogDirectories(_logger, _users.Count, _recipients.DomainCount, _recipients.MailboxCount);
        try
        {
            _limits.RememberLogins(await _userStore.RecentLoginsAsync(_limitOptions.FastPath.KnownNetworkTtl, cancellationToken));
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Owners are then learnt from their next login; nothing else depends on it.
            LogLoginsNotLoaded(_logger, ex);
        }
    }

    public async Task StartedAsync(CancellationToken cancellationToken)
    {
        await _listener.StartAsync(cancellationToken);
        _refresh = RefreshLoopAsync(_stopping.Token);
    }

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        await _listener.StopAsync(cancellationToken);
        try
        {
            await _refresh;
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task RefreshLoopAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.Directory.RefreshInterval, _time);
        while (await timer.WaitForNextTickAsync(cancellationToken))
        {
            await _users.RefreshQuietlyAsync(cancellationToken);
            await _recipients.RefreshQuietlyAsync(cancellationToken);
        }
    }

    public void Dispose() => _stopping.Dispose();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not load the networks accounts logged in from lately; owners are learnt from their next login")]
    private static partial void LogLoginsNotLoaded(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Directories loaded: {Users} users, {Domains} local domains, {Mailboxes} mailboxes")]
    private static partial void LogDirectories(ILogger logger, int users, int domains, int mailboxes);
}
