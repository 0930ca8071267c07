from alphaloop._console import main

main()
