from alphaloop.cli import main

main()
