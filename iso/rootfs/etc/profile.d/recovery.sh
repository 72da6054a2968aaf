# Login shells of the live system (sourced by /etc/profile).
export LANG=C.UTF-8
# On tty1 the TUI starts once per login; quitting it lands in this shell, from which `recovery`
# starts it again. Other consoles (the serial line, tty2..) get a plain shell.
if [ "$(tty)" = /dev/tty1 ] && [ -z "${RECOVERY_TUI_STARTED:-}" ]; then
    export RECOVERY_TUI_STARTED=1
    clear
    /usr/local/bin/recovery
    echo
    echo "The recovery TUI has ended. 'recovery' starts it again; 'recovery --help' shows the"
    echo "command line; 'poweroff' or 'reboot' to leave."
fi
