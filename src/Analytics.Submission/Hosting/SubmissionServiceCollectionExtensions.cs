using Analytics.Events;
using Analytics.Store;
using Microsoft.Extensions.Configuration;
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
    /// The host registers <see cref="IClickHouseStore"/> (migrated) and <see cref="IEventPublisher"/>.
    /// <see cref="ILimitBook"/> defaults to <see cref="StaticLimitBook"/>; register another first to replace it.
    /// </summary>
    public static IServiceCollection AddSubmission(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<SubmissionOptions>()
            .Bind(configuration.GetSection(SubmissionOptions.SectionName))
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<SubmissionOptions>, SubmissionOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp => new PasswordHasher(sp.GetRequiredService<IOptions<SubmissionOptions>>().Value.Directory.Pbkdf2Iterations));
        services.TryAddSingleton(sp => new UserStore(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<PasswordHasher>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(sp => new RecipientStore(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<UserDirectory>();
        services.TryAddSingleton<RecipientDirectory>();
        services.TryAddSingleton<StaticLimitBook>();
        services.TryAddSingleton<ILimitBook>(sp => sp.GetRequiredService<StaticLimitBook>());
        services.TryAddSingleton(sp => new SubmissionListener(
            sp.GetRequiredService<IOptions<SubmissionOptions>>().Value,
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

    /// <inheritdoc cref="AddSubmission(IServiceCollection, IConfiguration)"/>
    public static IHostApplicationBuilder AddSubmission(this IHostApplicationBuilder builder)
    {
        builder.Services.AddSubmission(builder.Configuration);
        return builder;
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
    private readonly SubmissionOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private Task _refresh = Task.CompletedTask;

    public SubmissionHostedService(SubmissionListener listener, UserDirectory users, RecipientDirectory recipients,
        IOptions<SubmissionOptions> options, TimeProvider time, ILogger<SubmissionHostedService> logger)
    {
        _listener = listener;
        _users = users;
        _recipients = recipients;
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

    [LoggerMessage(Level = LogLevel.Information, Message = "Directories loaded: {Users} users, {Domains} local domains, {Mailboxes} mailboxes")]
    private static partial void LogDirectories(ILogger logger, int users, int domains, int mailboxes);
}
